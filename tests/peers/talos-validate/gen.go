package main

// The generator side of the peer, for `vixen import` tests: configs made by Talos' own
// generator (pkg/machinery/config/generate, the package behind `talosctl gen config`), patched
// by Talos' own patcher (pkg/machinery/config/configpatcher, behind `--config-patch`), and
// compared by Talos' own diff (pkg/machinery/config/configdiff DiffToString, what a v1.11 dry-run apply prints).

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/siderolabs/talos/pkg/machinery/config"
	"github.com/siderolabs/talos/pkg/machinery/config/configdiff"
	"github.com/siderolabs/talos/pkg/machinery/config/configloader"
	"github.com/siderolabs/talos/pkg/machinery/config/configpatcher"
	"github.com/siderolabs/talos/pkg/machinery/config/encoder"
	"github.com/siderolabs/talos/pkg/machinery/config/generate"
	"github.com/siderolabs/talos/pkg/machinery/config/generate/secrets"
	"github.com/siderolabs/talos/pkg/machinery/config/machine"
	"gopkg.in/yaml.v3"
)

var subcommands = map[string]func([]string) int{
	"gen":   gen,
	"patch": patch,
	"diff":  diff,
}

// list is a repeatable string flag.
type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

// gen writes controlplane.yaml, worker.yaml and talosconfig to --out, as `talosctl gen config NAME
// ENDPOINT --kubernetes-version V --install-disk D --config-patch @F
// --config-patch-control-plane @F --config-patch-worker @F` does (with the generator's
// documentation comments, as talosctl writes them).
//
//	talos-validate gen --name N --endpoint URL [--kubernetes-version V] [--install-disk D]
//	  [--install-image I] [--patch F]... [--patch-controlplane F]... [--patch-worker F]... --out DIR
func gen(args []string) int {
	fs := flag.NewFlagSet("gen", flag.ExitOnError)
	name := fs.String("name", "", "cluster name")
	endpoint := fs.String("endpoint", "", "control plane endpoint (https://host:port)")
	k8s := fs.String("kubernetes-version", "", "Kubernetes version (default: the generator's)")
	disk := fs.String("install-disk", "/dev/sda", "install disk")
	// talosctl's default (cmd/talosctl/cmd/mgmt/gen/config.go, --install-image): the installer
	// of the machinery's own version.
	image := fs.String("install-image", "ghcr.io/siderolabs/installer:v1.11.6", "installer image")
	out := fs.String("out", "", "output directory")
	secretsIn := fs.String("secrets", "", "secrets bundle to use (as --with-secrets; default: a new one)")
	secretsOut := fs.String("secrets-out", "", "also write the bundle here, as `talosctl gen secrets` does")

	var all, cp, worker list

	fs.Var(&all, "patch", "patch file for every config (repeatable)")
	fs.Var(&cp, "patch-controlplane", "patch file for the control plane config (repeatable)")
	fs.Var(&worker, "patch-worker", "patch file for the worker config (repeatable)")

	if err := fs.Parse(args); err != nil || *name == "" || *endpoint == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "usage: talos-validate gen --name N --endpoint URL --out DIR [flags]")

		return 2
	}

	if *k8s == "" {
		*k8s = "1.34.1"
	}

	contract := config.TalosVersionCurrent

	var bundle *secrets.Bundle

	var err error

	if *secretsIn != "" {
		bundle, err = secrets.LoadBundle(*secretsIn)
	} else {
		bundle, err = secrets.NewBundle(secrets.NewClock(), contract)
	}

	if err != nil {
		return fail("secrets: %s", err)
	}

	if *secretsOut != "" {
		b, err := yaml.Marshal(bundle)
		if err != nil {
			return fail("secrets: %s", err)
		}

		if err := os.WriteFile(*secretsOut, b, 0o600); err != nil {
			return fail("%s", err)
		}
	}

	opts := []generate.Option{
		generate.WithSecretsBundle(bundle),
		generate.WithVersionContract(contract),
		generate.WithInstallDisk(*disk),
		generate.WithInstallImage(*image),
	}

	in, err := generate.NewInput(*name, *endpoint, *k8s, opts...)
	if err != nil {
		return fail("input: %s", err)
	}

	for _, role := range []struct {
		file    string
		kind    machine.Type
		patches []string
	}{
		{"controlplane.yaml", machine.TypeControlPlane, append(append([]string{}, all...), cp...)},
		{"worker.yaml", machine.TypeWorker, append(append([]string{}, all...), worker...)},
	} {
		cfg, err := in.Config(role.kind)
		if err != nil {
			return fail("%s: %s", role.file, err)
		}

		b, err := applyPatches(configpatcher.WithConfig(cfg), role.patches)
		if err != nil {
			return fail("%s: %s", role.file, err)
		}

		if err := os.WriteFile(filepath.Join(*out, role.file), b, 0o600); err != nil {
			return fail("%s", err)
		}
	}

	// The talosconfig, as talosctl gen config writes it (an os:admin client certificate).
	tc, err := in.Talosconfig()
	if err != nil {
		return fail("talosconfig: %s", err)
	}

	b, err := tc.Bytes()
	if err != nil {
		return fail("talosconfig: %s", err)
	}

	if err := os.WriteFile(filepath.Join(*out, "talosconfig"), b, 0o600); err != nil {
		return fail("%s", err)
	}

	return 0
}

// patch applies patch files to a config and writes the result, as `talosctl machineconfig
// patch IN --patch @F --output OUT` does.
//
//	talos-validate patch --in FILE --patch F [--patch F]... --out FILE
func patch(args []string) int {
	fs := flag.NewFlagSet("patch", flag.ExitOnError)
	inPath := fs.String("in", "", "config file")
	out := fs.String("out", "", "output file")

	var patches list

	fs.Var(&patches, "patch", "patch file (repeatable)")

	if err := fs.Parse(args); err != nil || *inPath == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "usage: talos-validate patch --in FILE --patch F... --out FILE")

		return 2
	}

	raw, err := os.ReadFile(*inPath)
	if err != nil {
		return fail("%s", err)
	}

	b, err := applyPatches(configpatcher.WithBytes(raw), patches)
	if err != nil {
		return fail("%s", err)
	}

	if err := os.WriteFile(*out, b, 0o600); err != nil {
		return fail("%s", err)
	}

	return 0
}

func applyPatches(in configpatcher.Input, files []string) ([]byte, error) {
	refs := make([]string, 0, len(files))
	for _, f := range files {
		refs = append(refs, "@"+f)
	}

	patches, err := configpatcher.LoadPatches(refs)
	if err != nil {
		return nil, err
	}

	out, err := configpatcher.Apply(in, patches)
	if err != nil {
		return nil, err
	}

	cfg, err := out.Config()
	if err != nil {
		return nil, err
	}

	return cfg.EncodeBytes(encoder.WithComments(encoder.CommentsAll))
}

// diff prints Talos' diff of two configs (both loaded with Talos' loader), or "No changes."
// when Talos sees none: the text a dry-run apply of B on a node running A answers. Exit 0
// when they are the same, 1 when they differ, 2 on errors.
func diff(args []string) int {
	if len(args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: talos-validate diff A B")

		return 2
	}

	a, err := configloader.NewFromFile(args[0])
	if err != nil {
		return fail("%s: %s", args[0], err)
	}

	b, err := configloader.NewFromFile(args[1])
	if err != nil {
		return fail("%s: %s", args[1], err)
	}

	d, err := configdiff.DiffToString(a, b)
	if err != nil {
		return fail("diff: %s", err)
	}

	if d == "" {
		fmt.Println("No changes.")

		return 0
	}

	fmt.Print(d)

	return 1
}

func fail(format string, a ...any) int {
	fmt.Fprintf(os.Stderr, format+"\n", a...)

	return 2
}
