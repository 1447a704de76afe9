// talos-protos: dumps the protobuf file descriptors compiled into Talos' generated Go API
// packages (pkg/machinery/api/machine, api/common and api/storage) as a binary google.protobuf.FileDescriptorSet,
// so that vixen's own protos can be checked against the real ones. Built once per pinned
// pkg/machinery version (go.mod: v1.13.x; go.v1.11.mod: v1.11.x, through go build -modfile).
//
//	talos-protos [-out FILE] [-packages machine,common,storage]
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime/debug"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	_ "github.com/siderolabs/talos/pkg/machinery/api/common"
	_ "github.com/siderolabs/talos/pkg/machinery/api/machine"
	_ "github.com/siderolabs/talos/pkg/machinery/api/storage"
)

func main() {
	out := flag.String("out", "", "write the FileDescriptorSet here (default: stdout)")
	pkgs := flag.String("packages", "machine,common,storage", "comma-separated proto packages to dump")
	version := flag.Bool("version", false, "print the pkg/machinery version and exit")
	flag.Parse()

	if *version {
		fmt.Println(machineryVersion())

		return
	}

	want := map[string]bool{}
	for _, p := range strings.Split(*pkgs, ",") {
		want[strings.TrimSpace(p)] = true
	}

	var files []*descriptorpb.FileDescriptorProto

	protoregistry.GlobalFiles.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		if want[string(fd.Package())] {
			files = append(files, protodesc.ToFileDescriptorProto(fd))
		}

		return true
	})

	sort.Slice(files, func(i, j int) bool { return files[i].GetName() < files[j].GetName() })

	data, err := proto.Marshal(&descriptorpb.FileDescriptorSet{File: files})
	if err != nil {
		fmt.Fprintln(os.Stderr, "talos-protos:", err)
		os.Exit(1)
	}

	if *out == "" {
		_, err = os.Stdout.Write(data)
	} else {
		err = os.WriteFile(*out, data, 0o644)
	}

	if err != nil {
		fmt.Fprintln(os.Stderr, "talos-protos:", err)
		os.Exit(1)
	}
}

// machineryVersion is the pkg/machinery module this binary was built with.
func machineryVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/siderolabs/talos/pkg/machinery" {
				return d.Version
			}
		}
	}

	return "unknown"
}
