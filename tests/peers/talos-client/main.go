// talos-client: a test peer that drives Talos nodes (or vixen's lab) the way talosctl does, through
// the real client of github.com/siderolabs/talos/pkg/machinery. It prints one JSON document per
// run on stdout; on error it prints {"code": "<gRPC code>", "message": "..."} and exits 1 (2 for
// bad usage).
//
//	talos-client [--talosconfig F] [--endpoints A,B] [--nodes N,M] [--node-key nodes|node]
//	             [--timeout 2m] <op> [args]
//
// Routing follows talosctl (cmd/talosctl/pkg/talos/global/client.go, WithClient): unary calls
// carry the `nodes` metadata (apid's one-to-many mode, replies with Metadata.hostname), the
// trackers and the streaming per-node calls carry `node` (client.WithNode, as
// cmd/talosctl/pkg/talos/action/tracker.go and cmd/talosctl/cmd/talos/multiplex do).
// `--node-key node` sends `node` for every call instead.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/siderolabs/talos/pkg/machinery/client"
	clientconfig "github.com/siderolabs/talos/pkg/machinery/client/config"
)

type globals struct {
	talosconfig string
	endpoints   []string
	nodes       []string
	nodeKey     string
	timeout     time.Duration
}

// usageError is a bad command line (exit 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func splitList(s string) []string {
	var out []string

	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}

	return out
}

func main() {
	var g globals

	fs := flag.NewFlagSet("talos-client", flag.ContinueOnError)
	fs.StringVar(&g.talosconfig, "talosconfig", os.Getenv("TALOSCONFIG"), "talosconfig file")
	endpoints := fs.String("endpoints", "", "comma-separated endpoints (override the talosconfig's)")
	nodes := fs.String("nodes", "", "comma-separated target nodes (gRPC `nodes`/`node` metadata)")
	fs.StringVar(&g.nodeKey, "node-key", "nodes", "metadata key for unary calls: nodes (as talosctl) or node")
	fs.DurationVar(&g.timeout, "timeout", 2*time.Minute, "overall timeout (the trackers' --timeout)")

	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}

	g.endpoints = splitList(*endpoints)
	g.nodes = splitList(*nodes)

	if fs.NArg() < 1 {
		fail(usageError{"missing op: version, services, etcd-members, etcd-status, etcd-snapshot, " +
			"etcd-leave, etcd-forfeit, etcd-remove-member, get-machineconfig, apply, bootstrap, upgrade, reboot, reset, kubeconfig"})
	}

	ctx, cancel := context.WithTimeout(context.Background(), g.timeout)
	defer cancel()

	out, err := run(ctx, &g, fs.Arg(0), fs.Args()[1:])
	if err != nil {
		fail(err)
	}

	emit(out)
}

// run dispatches one op.
func run(ctx context.Context, g *globals, op string, args []string) (any, error) {
	switch op {
	case "version":
		return unary(ctx, g, opVersion)
	case "services":
		return unary(ctx, g, opServices)
	case "etcd-members":
		return unary(ctx, g, opEtcdMembers)
	case "etcd-status":
		return unary(ctx, g, opEtcdStatus)
	case "etcd-leave":
		return unary(ctx, g, opEtcdLeave)
	case "etcd-forfeit":
		return unary(ctx, g, opEtcdForfeit)
	case "etcd-remove-member":
		if len(args) != 1 {
			return nil, usageError{"etcd-remove-member MEMBER_ID"}
		}

		return unary(ctx, g, func(ctx context.Context, c *client.Client) (any, error) {
			return opEtcdRemoveMember(ctx, c, args[0])
		})
	case "etcd-snapshot":
		if len(args) != 1 {
			return nil, usageError{"etcd-snapshot OUT"}
		}

		return unary(ctx, g, func(ctx context.Context, c *client.Client) (any, error) {
			return opEtcdSnapshot(ctx, c, args[0])
		})
	case "kubeconfig":
		if len(args) != 1 {
			return nil, usageError{"kubeconfig OUT"}
		}

		return unary(ctx, g, func(ctx context.Context, c *client.Client) (any, error) {
			return opKubeconfig(ctx, c, args[0])
		})
	case "bootstrap":
		return unary(ctx, g, opBootstrap)
	case "get-machineconfig":
		return unary(ctx, g, opGetMachineConfig)
	case "apply":
		return opApply(ctx, g, args)
	case "reboot":
		return opReboot(ctx, g, args)
	case "reset":
		return opReset(ctx, g, args)
	case "upgrade":
		return opUpgrade(ctx, g, args)
	default:
		return nil, usageError{fmt.Sprintf("unknown op %q", op)}
	}
}

// newClient builds an authenticated client from the talosconfig, as talosctl's
// WithClientNoNodes does (client.WithConfig, endpoints from the command line override).
func newClient(ctx context.Context, g *globals) (*client.Client, error) {
	if g.talosconfig == "" {
		return nil, usageError{"--talosconfig is required (or TALOSCONFIG)"}
	}

	cfg, err := clientconfig.Open(g.talosconfig)
	if err != nil {
		return nil, fmt.Errorf("failed to open config file %q: %w", g.talosconfig, err)
	}

	opts := []client.OptionFunc{client.WithConfig(cfg), client.WithDefaultGRPCDialOptions()}
	if len(g.endpoints) > 0 {
		opts = append(opts, client.WithEndpoints(g.endpoints...))
	}

	return client.New(ctx, opts...)
}

// newMaintenanceClient is talosctl's WithClientMaintenance: no client certificate, the server's
// certificate not verified, the nodes themselves are the endpoints.
func newMaintenanceClient(ctx context.Context, g *globals) (*client.Client, error) {
	eps := g.nodes
	if len(eps) == 0 {
		eps = g.endpoints
	}

	if len(eps) == 0 {
		return nil, usageError{"--insecure needs --nodes (or --endpoints)"}
	}

	return client.New(ctx, client.WithDefaultGRPCDialOptions(),
		client.WithTLSConfig(&tls.Config{InsecureSkipVerify: true}), //nolint:gosec // maintenance mode, as talosctl
		client.WithEndpoints(eps...))
}

// withNodes puts the target nodes on the context the way talosctl does.
func withNodes(ctx context.Context, g *globals) context.Context {
	switch {
	case len(g.nodes) == 0:
		return ctx
	case g.nodeKey == "node" && len(g.nodes) == 1:
		return client.WithNode(ctx, g.nodes[0])
	default:
		return client.WithNodes(ctx, g.nodes...)
	}
}

// unary runs f with an authenticated client and the nodes' metadata.
func unary(ctx context.Context, g *globals, f func(context.Context, *client.Client) (any, error)) (any, error) {
	c, err := newClient(ctx, g)
	if err != nil {
		return nil, err
	}
	defer c.Close() //nolint:errcheck

	return f(withNodes(ctx, g), c)
}

// pbJSON renders a protobuf message as a JSON value (field names as in the .proto).
func pbJSON(m proto.Message) json.RawMessage {
	b, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: false}.Marshal(m)
	if err != nil {
		return json.RawMessage(fmt.Sprintf("%q", err.Error()))
	}

	return b
}

func emit(v any) {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")

	if err := enc.Encode(v); err != nil {
		fmt.Fprintln(os.Stderr, "talos-client: cannot encode the result:", err)
		os.Exit(1)
	}
}

// fail prints the gRPC code and message (JSON on stdout, a line on stderr) and exits.
func fail(err error) {
	var u usageError
	if errors.As(err, &u) {
		fmt.Fprintln(os.Stderr, "talos-client: usage:", u.msg)
		os.Exit(2)
	}

	code := client.StatusCode(err)
	emit(map[string]string{"code": code.String(), "message": err.Error()})
	fmt.Fprintf(os.Stderr, "talos-client: %s: %s\n", code, err)
	os.Exit(1)
}
