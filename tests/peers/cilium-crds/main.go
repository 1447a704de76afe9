// Command cilium-crds copies Cilium's own CRD manifests for the LB-IPAM pool
// (CiliumLoadBalancerIPPool) and the L2 announcement policy (CiliumL2AnnouncementPolicy) out of
// the github.com/cilium/cilium module this program is pinned to (see go.mod), into a folder, so
// that tests can install them into a real kube-apiserver.
//
// A test peer of vixen: the product stays pure Rust.
//
//	cilium-crds -out DIR [-src CILIUM_MODULE_DIR]
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"

	ciliumio "github.com/cilium/cilium/pkg/k8s/apis/cilium.io"
)

const ciliumModule = "github.com/cilium/cilium"

// crds are the manifests copied, relative to the module root, with the kind each must define.
var crds = []struct{ path, kind string }{
	{"pkg/k8s/apis/cilium.io/client/crds/v2/ciliumloadbalancerippools.yaml", "CiliumLoadBalancerIPPool"},
	{"pkg/k8s/apis/cilium.io/client/crds/v2alpha1/ciliuml2announcementpolicies.yaml", "CiliumL2AnnouncementPolicy"},
}

func main() {
	out := flag.String("out", "", "folder to write the CRD manifests to (created)")
	src := flag.String("src", "", "the cilium module's source folder (default: from the Go module cache)")
	flag.Parse()

	if *out == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: cilium-crds -out DIR [-src CILIUM_MODULE_DIR]")
		os.Exit(2)
	}

	version, err := pinnedVersion()
	if err != nil {
		fail(err)
	}

	dir := *src
	if dir == "" {
		if dir, err = moduleDir(version); err != nil {
			fail(err)
		}
	}

	if err := os.MkdirAll(*out, 0o755); err != nil {
		fail(err)
	}

	for _, c := range crds {
		data, err := os.ReadFile(filepath.Join(dir, c.path))
		if err != nil {
			fail(err)
		}

		if err := check(data, c.kind); err != nil {
			fail(fmt.Errorf("%s: %w", c.path, err))
		}

		dst := filepath.Join(*out, filepath.Base(c.path))
		if err := os.WriteFile(dst, data, 0o644); err != nil {
			fail(err)
		}

		fmt.Printf("%s %s -> %s\n", ciliumModule+"@"+version, c.path, dst)
	}

	// The version the manifests came from, for the tests' messages.
	if err := os.WriteFile(filepath.Join(*out, "VERSION"), []byte(version+"\n"), 0o644); err != nil {
		fail(err)
	}
}

// pinnedVersion is the cilium module version this binary was built with (go.mod).
func pinnedVersion() (string, error) {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "", fmt.Errorf("no build info")
	}

	for _, dep := range info.Deps {
		if dep.Path == ciliumModule {
			if dep.Replace != nil {
				return dep.Replace.Version, nil
			}

			return dep.Version, nil
		}
	}

	return "", fmt.Errorf("%s is not a dependency of this build", ciliumModule)
}

// moduleDir asks the go command for the module's extracted source (downloading it if needed).
func moduleDir(version string) (string, error) {
	cmd := exec.Command("go", "mod", "download", "-json", ciliumModule+"@"+version)
	cmd.Stderr = os.Stderr

	text, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go mod download %s@%s: %w", ciliumModule, version, err)
	}

	var mod struct{ Dir, Error string }
	if err := json.Unmarshal(text, &mod); err != nil {
		return "", err
	}

	if mod.Error != "" {
		return "", fmt.Errorf("go mod download: %s", mod.Error)
	}

	return mod.Dir, nil
}

// check makes sure the file is the CRD expected: group cilium.io and the kind asked for.
func check(data []byte, kind string) error {
	for _, want := range []string{
		"kind: CustomResourceDefinition",
		"group: " + ciliumio.CustomResourceDefinitionGroup,
		"kind: " + kind,
	} {
		if !bytes.Contains(data, []byte(want)) {
			return fmt.Errorf("not the expected CRD: %q not found", want)
		}
	}

	return nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "cilium-crds:", err)
	os.Exit(1)
}
