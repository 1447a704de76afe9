package main

// The `--wait` of talosctl reboot, reset and upgrade, as cmd/talosctl/pkg/talos/action
// (tracker.go, node.go) implements it, per node through client.WithNode:
//  1. watch MachineService.Events (tail 0) and read the boot ID
//     (MachineService.Read /proc/sys/kernel/random/boot_id) before the action;
//  2. run the action, take the actor ID from its reply;
//  3. read events until the expected one (MachineStatusEvent RUNNING+ready, or for reset the
//     TaskEvent stopAllServices); the actor's TaskEvent stopAllServices and SequenceEvent
//     "reboot" end a stream on purpose, EOF/Unavailable/Canceled reconnect with tail -1 (all
//     events of the new boot); a SequenceEvent error fails;
//  4. post check, retried: the boot ID changed (reset --reboot: or the node answers in
//     maintenance mode, through StorageService.Disks).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/siderolabs/talos/pkg/machinery/api/machine"
	"github.com/siderolabs/talos/pkg/machinery/client"
)

// trackResult is what a tracked action reports per node.
type trackResult struct {
	Node        string   `json:"node"`
	ActorID     string   `json:"actor_id"`
	BootIDFirst string   `json:"boot_id_before"`
	BootIDAfter string   `json:"boot_id_after,omitempty"`
	Maintenance bool     `json:"maintenance_after,omitempty"`
	Reconnects  int      `json:"reconnects"`
	Events      []string `json:"events"`
}

type tracker struct {
	g        *globals
	c        *client.Client
	expected func(client.Event) bool
	action   func(ctx context.Context) (string, error)
	// postCheck returns nil when done, errRetry to try again.
	postCheck func(ctx context.Context, res *trackResult) error
}

var errRetry = errors.New("not yet")

func machineReady(ev client.Event) bool {
	m, ok := ev.Payload.(*machine.MachineStatusEvent)

	return ok && m.GetStage() == machine.MachineStatusEvent_RUNNING && m.GetStatus().GetReady()
}

func stopAllServices(ev client.Event) bool {
	t, ok := ev.Payload.(*machine.TaskEvent)

	return ok && t.GetTask() == "stopAllServices"
}

// retryable is the tracker's reconnect condition.
func retryable(err error) bool {
	code := client.StatusCode(err)

	return errors.Is(err, io.EOF) || code == codes.Unavailable || code == codes.Canceled
}

func bootID(ctx context.Context, c *client.Client) (string, error) {
	r, err := c.Read(ctx, "/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", err
	}
	defer r.Close() //nolint:errcheck

	b, err := io.ReadAll(r)
	if err != nil {
		return "", err
	}

	return strings.TrimSpace(string(b)), nil
}

// bootIDChanged is action.BootIDChangedPostCheckFn.
func bootIDChanged(ctx context.Context, c *client.Client, res *trackResult) error {
	id, err := bootID(ctx, c)
	if err != nil {
		return err
	}

	if id == res.BootIDFirst {
		return errRetry
	}

	res.BootIDAfter = id

	return nil
}

// run tracks one node.
func (t *tracker) run(ctx context.Context, node string) (*trackResult, error) {
	ctx = client.WithNode(ctx, node)
	res := &trackResult{Node: node, Events: []string{}}
	actorCh := make(chan string, 1)
	done := make(chan error, 1)

	go func() { done <- t.watch(ctx, res, actorCh) }()

	var err error

	if t.postCheck != nil {
		if res.BootIDFirst, err = bootID(ctx, t.c); err != nil {
			return res, fmt.Errorf("reading the boot ID before the action: %w", err)
		}
	}

	actor, err := t.action(ctx)
	if err != nil {
		return res, err
	}

	res.ActorID = actor
	actorCh <- actor

	if err = <-done; err != nil {
		return res, err
	}

	if t.postCheck == nil {
		return res, nil
	}

	for {
		err = t.postCheck(ctx, res)
		if err == nil {
			return res, nil
		}

		if !errors.Is(err, errRetry) && !retryable(err) {
			return res, fmt.Errorf("post check: %w", err)
		}

		select {
		case <-ctx.Done():
			return res, fmt.Errorf("post check (boot ID still %s): %w: %w", res.BootIDFirst, ctx.Err(), err)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// watch follows the events until the expected one, reconnecting as the tracker does.
func (t *tracker) watch(ctx context.Context, res *trackResult, actorCh chan string) error {
	var (
		tail    int32
		actor   string
		waiting = true
	)

	for {
		err := func() error {
			wctx, cancel := context.WithCancel(ctx)
			defer cancel()

			ch := make(chan client.EventResult)
			if err := t.c.EventsWatchV2(wctx, ch, client.WithTailEvents(tail)); err != nil {
				return err
			}

			if waiting {
				select {
				case actor = <-actorCh:
				case <-ctx.Done():
					return ctx.Err()
				}

				waiting = false
			}

			return t.handle(ctx, ch, actor, res)
		}()
		if err == nil {
			return nil
		}

		if !retryable(err) && !errors.Is(err, errRetry) {
			return err
		}

		res.Reconnects++
		tail, actor = -1, ""

		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the node's events: %w (last: %w)", ctx.Err(), err)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (t *tracker) handle(ctx context.Context, ch chan client.EventResult, actor string, res *trackResult) error {
	for {
		var r client.EventResult

		select {
		case r = <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}

		if r.Error != nil {
			return r.Error
		}

		res.Events = append(res.Events, describe(r.Event))

		if t.expected(r.Event) {
			return nil
		}

		if r.Event.ActorID != actor {
			continue
		}

		switch m := r.Event.Payload.(type) {
		case *machine.TaskEvent:
			if m.GetTask() == "stopAllServices" {
				return errRetry
			}
		case *machine.SequenceEvent:
			if m.GetSequence() == "reboot" {
				return errRetry
			}

			if m.GetError().GetMessage() != "" {
				return fmt.Errorf("sequence error: %s", m.GetError().GetMessage())
			}
		}
	}
}

func describe(ev client.Event) string {
	switch m := ev.Payload.(type) {
	case *machine.SequenceEvent:
		return fmt.Sprintf("sequence %s %v actor=%s", m.GetSequence(), m.GetAction(), ev.ActorID)
	case *machine.PhaseEvent:
		return fmt.Sprintf("phase %s %v", m.GetPhase(), m.GetAction())
	case *machine.TaskEvent:
		return fmt.Sprintf("task %s %v actor=%s", m.GetTask(), m.GetAction(), ev.ActorID)
	case *machine.MachineStatusEvent:
		return fmt.Sprintf("machine %v ready=%v", m.GetStage(), m.GetStatus().GetReady())
	case *machine.ServiceStateEvent:
		return fmt.Sprintf("service %s %v", m.GetService(), m.GetAction())
	default:
		return ev.TypeURL
	}
}

// trackAll runs the tracker on every node (--nodes, else the endpoints).
func trackAll(ctx context.Context, g *globals, c *client.Client, t *tracker) (any, error) {
	targets := g.nodes
	if len(targets) == 0 {
		targets = g.endpoints
	}

	if len(targets) == 0 {
		return nil, usageError{"--wait needs --nodes or --endpoints"}
	}

	t.c = c
	out := []*trackResult{}

	for _, n := range targets {
		res, err := t.run(ctx, n)
		out = append(out, res)

		if err != nil {
			return nil, fmt.Errorf("%s: %w (events seen: %v)", n, err, res.Events)
		}
	}

	return map[string]any{"nodes": out}, nil
}
