package main

// reboot, reset and upgrade, as cmd/talosctl/cmd/talos/{reboot,reset,upgrade}.go run them.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/blang/semver/v4"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/siderolabs/talos/pkg/machinery/api/common"
	"github.com/siderolabs/talos/pkg/machinery/api/machine"
	"github.com/siderolabs/talos/pkg/machinery/client"
)

func parseWait(name string, args []string, extra func(*flag.FlagSet)) (wait bool, pos []string, err error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.BoolVar(&wait, "wait", false, "track the action as talosctl's --wait does")

	if extra != nil {
		extra(fs)
	}

	for len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		pos, args = append(pos, args[0]), args[1:]
	}

	if err = fs.Parse(args); err != nil {
		return false, nil, usageError{err.Error()}
	}

	return wait, append(pos, fs.Args()...), nil
}

func firstActor[T interface{ GetActorId() string }](msgs []T) (string, error) {
	if len(msgs) == 0 {
		return "", errors.New("no messages returned from action run")
	}

	return msgs[0].GetActorId(), nil
}

// opReboot is talosctl reboot [--wait].
func opReboot(ctx context.Context, g *globals, args []string) (any, error) {
	wait, _, err := parseWait("reboot", args, nil)
	if err != nil {
		return nil, err
	}

	c, err := newClient(ctx, g)
	if err != nil {
		return nil, err
	}
	defer c.Close() //nolint:errcheck

	if !wait {
		resp, rerr := c.RebootWithResponse(withNodes(ctx, g))
		if rerr != nil {
			return nil, rerr
		}

		return pbJSON(resp), nil
	}

	return trackAll(ctx, g, c, &tracker{
		expected: machineReady,
		action: func(ctx context.Context) (string, error) {
			resp, rerr := c.RebootWithResponse(ctx)
			if rerr != nil {
				return "", rerr
			}

			return firstActor(resp.GetMessages())
		},
		postCheck: func(ctx context.Context, res *trackResult) error { return bootIDChanged(ctx, c, res) },
	})
}

var wipeModes = map[string]machine.ResetRequest_WipeMode{
	"all":         machine.ResetRequest_ALL,
	"system-disk": machine.ResetRequest_SYSTEM_DISK,
	"user-disks":  machine.ResetRequest_USER_DISKS,
}

// opReset is talosctl reset [--graceful=true] [--reboot] [--wipe-mode M]
// [--system-labels-to-wipe STATE,EPHEMERAL] [--wait].
func opReset(ctx context.Context, g *globals, args []string) (any, error) {
	var (
		graceful, reboot bool
		mode, labels     string
	)

	wait, _, err := parseWait("reset", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&graceful, "graceful", true, "cordon, drain, leave etcd first")
		fs.BoolVar(&reboot, "reboot", false, "reboot after the reset instead of halting")
		fs.StringVar(&mode, "wipe-mode", "all", "all, system-disk, user-disks")
		fs.StringVar(&labels, "system-labels-to-wipe", "", "comma-separated partition labels")
	})
	if err != nil {
		return nil, err
	}

	wm, ok := wipeModes[mode]
	if !ok {
		return nil, usageError{fmt.Sprintf("unknown wipe mode %q", mode)}
	}

	req := &machine.ResetRequest{Graceful: graceful, Reboot: reboot, Mode: wm}
	for _, l := range splitList(labels) {
		req.SystemPartitionsToWipe = append(req.SystemPartitionsToWipe, &machine.ResetPartitionSpec{Label: l, Wipe: true})
	}

	c, err := newClient(ctx, g)
	if err != nil {
		return nil, err
	}
	defer c.Close() //nolint:errcheck

	if !wait {
		resp, rerr := c.ResetGenericWithResponse(withNodes(ctx, g), req)
		if rerr != nil {
			return nil, rerr
		}

		return pbJSON(resp), nil
	}

	t := &tracker{
		expected: stopAllServices,
		action: func(ctx context.Context) (string, error) {
			resp, rerr := c.ResetGenericWithResponse(ctx, req)
			if rerr != nil {
				return "", rerr
			}

			return firstActor(resp.GetMessages())
		},
	}

	if reboot {
		// reset.go: done once the node answers in maintenance mode (Disks over the insecure
		// client), or its boot ID changed in normal mode.
		t.postCheck = func(ctx context.Context, res *trackResult) error {
			mg := *g
			mg.nodes = []string{res.Node}

			if mc, merr := newMaintenanceClient(ctx, &mg); merr == nil {
				_, derr := mc.Disks(ctx)
				mc.Close() //nolint:errcheck

				if derr == nil {
					res.Maintenance = true

					return nil
				}
			}

			return bootIDChanged(ctx, c, res)
		}
	}

	return trackAll(ctx, g, c, t)
}

// The LifecycleService upgrade API is used for servers in this range (upgrade.go).
var lifecycleRange = semver.MustParseRange(">1.13.0-alpha.2 <2.0.0")

// opUpgrade is talosctl upgrade --image IMAGE [--wait] (1.13): on servers older than 1.13 the
// legacy MachineService.Upgrade, tracked like a reboot; from 1.13 ImageService.Pull, then
// LifecycleService.Upgrade (streaming progress, the installer's exit code last), then a reboot.
func opUpgrade(ctx context.Context, g *globals, args []string) (any, error) {
	var stage, force bool

	wait, pos, err := parseWait("upgrade", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&stage, "stage", false, "legacy only: stage the upgrade")
		fs.BoolVar(&force, "force", false, "legacy only: skip the etcd checks")
	})
	if err != nil {
		return nil, err
	}

	if len(pos) != 1 {
		return nil, usageError{"upgrade IMAGE [--wait]"}
	}

	image := pos[0]

	c, err := newClient(ctx, g)
	if err != nil {
		return nil, err
	}
	defer c.Close() //nolint:errcheck

	legacy, err := needsLegacy(withNodes(ctx, g), c)
	if err != nil {
		return nil, err
	}

	if legacy {
		action := func(ctx context.Context) (string, error) {
			resp, uerr := c.UpgradeWithOptions(ctx, client.WithUpgradeImage(image), //nolint:staticcheck // the legacy path talosctl takes
				client.WithUpgradeStage(stage), client.WithUpgradeForce(force))
			if uerr != nil {
				return "", uerr
			}

			return firstActor(resp.GetMessages())
		}
		if !wait {
			actor, aerr := action(withNodes(ctx, g))

			return map[string]any{"api": "legacy", "actor_id": actor}, aerr
		}

		out, terr := trackAll(ctx, g, c, &tracker{
			expected: machineReady, action: action,
			postCheck: func(ctx context.Context, res *trackResult) error { return bootIDChanged(ctx, c, res) },
		})

		return map[string]any{"api": "legacy", "result": out}, terr
	}

	installed := map[string]any{}

	for _, node := range targets(g) {
		nctx := client.WithNode(ctx, node)
		if err = pullImage(nctx, c, image); err != nil {
			return nil, fmt.Errorf("error pulling upgrade image: %s: %w", node, err)
		}

		lines, uerr := lifecycleUpgrade(nctx, c, image)
		if uerr != nil {
			return nil, fmt.Errorf("error during upgrade: %s: %w", node, uerr)
		}

		installed[node] = lines
	}

	if !wait {
		resp, rerr := c.RebootWithResponse(withNodes(ctx, g))
		if rerr != nil {
			return nil, rerr
		}

		return map[string]any{"api": "lifecycle", "installed": installed, "reboot": pbJSON(resp)}, nil
	}

	out, err := opRebootTracked(ctx, g, c)

	return map[string]any{"api": "lifecycle", "installed": installed, "result": out}, err
}

func opRebootTracked(ctx context.Context, g *globals, c *client.Client) (any, error) {
	return trackAll(ctx, g, c, &tracker{
		expected: machineReady,
		action: func(ctx context.Context) (string, error) {
			resp, err := c.RebootWithResponse(ctx)
			if err != nil {
				return "", err
			}

			return firstActor(resp.GetMessages())
		},
		postCheck: func(ctx context.Context, res *trackResult) error { return bootIDChanged(ctx, c, res) },
	})
}

func targets(g *globals) []string {
	if len(g.nodes) > 0 {
		return g.nodes
	}

	return g.endpoints
}

// needsLegacy is helpers.TalosVersionCheck against the LifecycleService range.
func needsLegacy(ctx context.Context, c *client.Client) (bool, error) {
	resp, err := c.Version(ctx)
	if err != nil {
		return false, fmt.Errorf("error getting server versions: %w", err)
	}

	legacy := false

	for _, m := range resp.GetMessages() {
		v, perr := semver.ParseTolerant(m.GetVersion().GetTag())
		if perr != nil {
			return false, fmt.Errorf("%s: error parsing server version: %w", m.GetMetadata().GetHostname(), perr)
		}

		if !lifecycleRange(v) {
			legacy = true
		}
	}

	return legacy, nil
}

// pullImage is ImageService.Pull into the system containerd (talosctl's default namespace),
// falling back to the legacy MachineService.ImagePull on Unimplemented (image.go).
func pullImage(ctx context.Context, c *client.Client, image string) error {
	stream, err := c.ImageClient.Pull(ctx, &machine.ImageServicePullRequest{
		Containerd: systemContainerd(),
		ImageRef:   image,
	})
	if err == nil {
		for {
			_, err = stream.Recv()
			if err != nil {
				break
			}
		}

		if errors.Is(err, io.EOF) {
			return nil
		}
	}

	if status.Code(err) == codes.Unimplemented {
		return c.ImagePull(ctx, common.ContainerdNamespace_NS_SYSTEM, image) //nolint:staticcheck // talosctl's fallback
	}

	return err
}

// lifecycleUpgrade streams LifecycleService.Upgrade; a non-zero exit code fails.
func lifecycleUpgrade(ctx context.Context, c *client.Client, image string) ([]string, error) {
	stream, err := c.LifecycleClient.Upgrade(ctx, &machine.LifecycleServiceUpgradeRequest{
		Containerd: systemContainerd(),
		Source:     &machine.InstallArtifactsSource{ImageName: image},
	})
	if err != nil {
		return nil, err
	}

	lines := []string{}
	exit := int32(-1)

	for {
		resp, rerr := stream.Recv()
		if errors.Is(rerr, io.EOF) {
			break
		}

		if rerr != nil {
			return lines, rerr
		}

		switch p := resp.GetProgress().GetResponse().(type) {
		case *machine.LifecycleServiceInstallProgress_Message:
			lines = append(lines, p.Message)
		case *machine.LifecycleServiceInstallProgress_ExitCode:
			exit = p.ExitCode
		}
	}

	if exit != 0 {
		return lines, fmt.Errorf("upgrade failed with exit code %d", exit)
	}

	return lines, nil
}

// systemContainerd is talosctl's default --namespace system (image.go containerdInstance).
func systemContainerd() *common.ContainerdInstance {
	return &common.ContainerdInstance{Driver: common.ContainerDriver_CRI, Namespace: common.ContainerdNamespace_NS_SYSTEM}
}
