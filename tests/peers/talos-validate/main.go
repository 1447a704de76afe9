// Command talos-validate loads Talos machine configs with Talos' own config loader
// (pkg/machinery/config/configloader) and validates them as `talosctl validate` does, in a
// runtime mode (metal by default). It prints Talos' warnings and errors, one per line, and exits
// 1 when a config does not load or validate, 2 on usage errors.
//
// A test peer of vixen: the product stays pure Rust.
//
//	talos-validate [--mode metal|cloud|container] [--strict] FILE...
//	talos-validate gen ...    (see gen.go: configs as `talosctl gen config` makes them)
//	talos-validate patch ...  (see gen.go: a config patched as `talosctl machineconfig patch`)
//	talos-validate diff A B   (see gen.go: Talos' own config diff, as a dry-run apply shows it)
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/siderolabs/talos/pkg/machinery/config/configloader"
	"github.com/siderolabs/talos/pkg/machinery/config/validation"
)

// mode is a validation.RuntimeMode: the machined runtime modes live in Talos' internal
// packages, so their three answers are restated here.
type mode string

func (m mode) String() string        { return string(m) }
func (m mode) RequiresInstall() bool { return m == "metal" }
func (m mode) InContainer() bool     { return m == "container" }

func main() {
	if len(os.Args) > 1 {
		if sub, ok := subcommands[os.Args[1]]; ok {
			os.Exit(sub(os.Args[2:]))
		}
	}

	modeArg := flag.String("mode", "metal", "runtime mode: metal, cloud or container")
	strict := flag.Bool("strict", false, "treat warnings as errors")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: talos-validate [--mode metal|cloud|container] [--strict] FILE...\n")
		flag.PrintDefaults()
	}
	flag.Parse()

	switch *modeArg {
	case "metal", "cloud", "container":
	default:
		fmt.Fprintf(os.Stderr, "unknown mode %q\n", *modeArg)
		os.Exit(2)
	}

	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}

	// Local: the checks that need the machine itself (disks, links) are skipped, as
	// `talosctl validate` does on a workstation.
	opts := []validation.Option{validation.WithLocal()}
	if *strict {
		opts = append(opts, validation.WithStrict())
	}

	failed := false

	for _, path := range flag.Args() {
		if !validate(path, mode(*modeArg), opts) {
			failed = true
		}
	}

	if failed {
		os.Exit(1)
	}
}

// validate reports on one file and says whether it passed.
func validate(path string, m mode, opts []validation.Option) bool {
	cfg, err := configloader.NewFromFile(path)
	if err != nil {
		fmt.Printf("%s: failed to load config: %s\n", path, err)

		return false
	}

	warnings, err := cfg.Validate(m, opts...)
	for _, w := range warnings {
		fmt.Printf("%s: warning: %s\n", path, w)
	}

	if err != nil {
		fmt.Printf("%s: failed to validate config: %s\n", path, err)

		return false
	}

	fmt.Printf("%s is valid for %s mode\n", path, m)

	return true
}
