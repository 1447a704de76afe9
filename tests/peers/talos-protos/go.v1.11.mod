// Talos' generated API packages, pkg/machinery v1.11.x (built with go build -modfile=go.v1.11.mod).
module vixen.dev/tests/peers/talos-protos

go 1.24.0

require (
	github.com/siderolabs/talos/pkg/machinery v1.11.6
	google.golang.org/protobuf v1.36.6
)

require (
	github.com/planetscale/vtprotobuf v0.6.1-0.20241121165744-79df5c4772f2 // indirect
	golang.org/x/net v0.43.0 // indirect
	golang.org/x/sys v0.35.0 // indirect
	golang.org/x/text v0.28.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20250715232539-7130f93afb79 // indirect
	google.golang.org/grpc v1.73.0 // indirect
)
