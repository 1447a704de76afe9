package main

// The one-call ops, each as the talosctl command of the same name does it
// (cmd/talosctl/cmd/talos/{version,service,etcd,bootstrap,kubeconfig,apply-config}.go).

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/siderolabs/talos/pkg/machinery/api/machine"
	"github.com/siderolabs/talos/pkg/machinery/client"
	"github.com/siderolabs/talos/pkg/machinery/formatters"

	"github.com/siderolabs/talos/pkg/machinery/resources/config"
	etcdresource "github.com/siderolabs/talos/pkg/machinery/resources/etcd"
)

func opVersion(ctx context.Context, c *client.Client) (any, error) {
	resp, err := c.Version(ctx)
	if err != nil {
		return nil, err
	}

	return pbJSON(resp), nil
}

// serviceRow is what `talosctl services` prints per service.
type serviceRow struct {
	Node      string `json:"node"`
	ID        string `json:"id"`
	State     string `json:"state"`
	Health    string `json:"health"`
	LastEvent string `json:"last_event"`
}

// opServices lists services and renders them through pkg/machinery's formatters, as talosctl
// services does: a reply without `events` makes talosctl crash, here it is an error naming the
// service.
func opServices(ctx context.Context, c *client.Client) (out any, err error) {
	resp, err := c.ServiceList(ctx)
	if err != nil {
		return nil, err
	}

	rows := []serviceRow{}

	for _, msg := range resp.GetMessages() {
		for _, s := range msg.GetServices() {
			row, rerr := renderService(msg.GetMetadata().GetHostname(), s)
			if rerr != nil {
				return nil, rerr
			}

			rows = append(rows, row)
		}
	}

	return map[string]any{"services": rows, "response": pbJSON(resp)}, nil
}

func renderService(node string, s *machine.ServiceInfo) (row serviceRow, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("talosctl services would crash on service %q (events %v, health %v): %v",
				s.GetId(), s.GetEvents(), s.GetHealth(), r)
		}
	}()

	w := formatters.ServiceInfoWrapper{ServiceInfo: s}

	return serviceRow{
		Node: node, ID: w.Id, State: w.State, Health: w.HealthStatus(), LastEvent: w.LastEvent(),
	}, nil
}

func opEtcdMembers(ctx context.Context, c *client.Client) (any, error) {
	// talosctl etcd members asks with QueryLocal: true (etcd.go).
	resp, err := c.EtcdMemberList(ctx, &machine.EtcdMemberListRequest{QueryLocal: true})
	if err != nil {
		return nil, err
	}

	return pbJSON(resp), nil
}

func opEtcdStatus(ctx context.Context, c *client.Client) (any, error) {
	resp, err := c.EtcdStatus(ctx)
	if err != nil {
		return nil, err
	}

	return pbJSON(resp), nil
}

func opEtcdLeave(ctx context.Context, c *client.Client) (any, error) {
	if err := c.EtcdLeaveCluster(ctx, &machine.EtcdLeaveClusterRequest{}); err != nil {
		return nil, err
	}

	return map[string]bool{"left": true}, nil
}

func opEtcdForfeit(ctx context.Context, c *client.Client) (any, error) {
	resp, err := c.EtcdForfeitLeadership(ctx, &machine.EtcdForfeitLeadershipRequest{})
	if err != nil {
		return nil, err
	}

	return pbJSON(resp), nil
}

func opEtcdRemoveMember(ctx context.Context, c *client.Client, id string) (any, error) {
	// talosctl parses the ID as etcd prints it (hex), with pkg/machinery's ParseMemberID.
	memberID, err := etcdresource.ParseMemberID(id)
	if err != nil {
		return nil, usageError{fmt.Sprintf("error parsing member ID %q: %v", id, err)}
	}

	if err = c.EtcdRemoveMemberByID(ctx, &machine.EtcdRemoveMemberByIDRequest{MemberId: memberID}); err != nil {
		return nil, err
	}

	return map[string]string{"removed": etcdresource.FormatMemberID(memberID)}, nil
}

// opEtcdSnapshot streams the snapshot to OUT and checks etcd's trailing sha256 as talosctl does
// (a snapshot's size is 512*n + 32).
func opEtcdSnapshot(ctx context.Context, c *client.Client, path string) (any, error) {
	r, err := c.EtcdSnapshot(ctx, &machine.EtcdSnapshotRequest{})
	if err != nil {
		return nil, err
	}
	defer r.Close() //nolint:errcheck

	data, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}

	if len(data)%512 != sha256.Size {
		return nil, fmt.Errorf("sha256 checksum not found (size %d)", len(data))
	}

	body, sum := data[:len(data)-sha256.Size], data[len(data)-sha256.Size:]
	if got := sha256.Sum256(body); hex.EncodeToString(got[:]) != hex.EncodeToString(sum) {
		return nil, fmt.Errorf("snapshot sha256 mismatch: trailer %x, content %x", sum, got)
	}

	if err = os.WriteFile(path, data, 0o600); err != nil {
		return nil, err
	}

	return map[string]any{"path": path, "size": len(data)}, nil
}

func opKubeconfig(ctx context.Context, c *client.Client, path string) (any, error) {
	data, err := c.Kubeconfig(ctx)
	if err != nil {
		return nil, err
	}

	if err = os.WriteFile(path, data, 0o600); err != nil {
		return nil, err
	}

	return map[string]any{"path": path, "size": len(data)}, nil
}

func opBootstrap(ctx context.Context, c *client.Client) (any, error) {
	if err := c.Bootstrap(ctx, &machine.BootstrapRequest{}); err != nil {
		return nil, err
	}

	return map[string]bool{"bootstrapped": true}, nil
}

var applyModes = map[string]machine.ApplyConfigurationRequest_Mode{
	"auto":      machine.ApplyConfigurationRequest_AUTO,
	"no-reboot": machine.ApplyConfigurationRequest_NO_REBOOT,
	"reboot":    machine.ApplyConfigurationRequest_REBOOT,
	"staged":    machine.ApplyConfigurationRequest_STAGED,
	"try":       machine.ApplyConfigurationRequest_TRY,
}

// opApply is talosctl apply-config: FILE --mode M [--dry-run] [--insecure].
func opApply(ctx context.Context, g *globals, args []string) (any, error) {
	fs := flag.NewFlagSet("apply", flag.ContinueOnError)
	mode := fs.String("mode", "auto", "auto, no-reboot, reboot, staged, try")
	dryRun := fs.Bool("dry-run", false, "check only")
	insecure := fs.Bool("insecure", false, "maintenance mode (no client certificate)")

	if len(args) < 1 || strings.HasPrefix(args[0], "-") {
		return nil, usageError{"apply FILE [--mode M] [--dry-run] [--insecure]"}
	}

	if err := fs.Parse(args[1:]); err != nil {
		return nil, usageError{err.Error()}
	}

	m, ok := applyModes[*mode]
	if !ok {
		return nil, usageError{fmt.Sprintf("unknown mode %q", *mode)}
	}

	data, err := os.ReadFile(args[0])
	if err != nil {
		return nil, err
	}

	var c *client.Client

	if *insecure {
		c, err = newMaintenanceClient(ctx, g)
	} else {
		c, err = newClient(ctx, g)
		ctx = withNodes(ctx, g)
	}

	if err != nil {
		return nil, err
	}
	defer c.Close() //nolint:errcheck

	resp, err := c.ApplyConfiguration(ctx, &machine.ApplyConfigurationRequest{
		Data: data, Mode: m, DryRun: *dryRun, TryModeTimeout: durationpb.New(time.Minute), // talosctl's --timeout default
	})
	if err != nil {
		return nil, fmt.Errorf("error applying new configuration: %w", err)
	}

	return pbJSON(resp), nil
}

// opGetMachineConfig reads the running machine config as `talosctl get machineconfig -o yaml`
// does: COSI Get through the client's state (the resource's protobuf spec unmarshalled and the
// config loaded by Talos' own loader), then the config's bytes. Prints their sha256, length and
// the machine type the loader saw (never the config: it holds secrets).
func opGetMachineConfig(ctx context.Context, c *client.Client) (any, error) {
	mc, err := safe.StateGet[*config.MachineConfig](ctx, c.COSI,
		resource.NewMetadata(config.NamespaceName, config.MachineConfigType, config.ActiveID, resource.VersionUndefined))
	if err != nil {
		return nil, err
	}

	b, err := mc.Provider().Bytes()
	if err != nil {
		return nil, err
	}

	sum := sha256.Sum256(b)

	return map[string]any{
		"id":      mc.Metadata().ID(),
		"type":    mc.Config().Machine().Type().String(),
		"sha256":  hex.EncodeToString(sum[:]),
		"bytes":   len(b),
		"version": mc.Metadata().Version().String(),
	}, nil
}
