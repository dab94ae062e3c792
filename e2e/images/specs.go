package images

import (
	"os"
	"os/exec"
)

// References of the images the suite builds. The tag is fixed: the content
// hash lives in the LabelHash label, so a changed input replaces the image
// under the same reference.
const (
	RedisRef   = "gr-redis:e2e"
	NATSRef    = "gr-nats:e2e"
	ChildRef   = "gr-child:e2e"
	ManagerRef = "gr-manager:e2e"
)

// Labels set on every image built here. Containers inherit image labels, so
// these keys deliberately differ from the harness's container label
// (globalreplica.e2e), which marks containers for cleanup.
const (
	LabelImage = "globalreplica.e2e.image" // "1" on every image built by this package
	LabelHash  = "globalreplica.e2e.hash"  // SHA-256 of the build context
)

// Ports the images listen on, in Docker's "port/proto" form.
const (
	RedisPort      = "6379/tcp"
	NATSPort       = "4222/tcp"
	NATSMonitoring = "8222/tcp"
	ChildPort      = "6380/tcp"
	ChildHTTPPort  = "9121/tcp" // /healthz, /metrics, /channels
)

// EnvRedisServer names the host redis-server copied into gr-redis:e2e when
// set; otherwise redis-server is looked up on PATH, then /usr/bin.
const EnvRedisServer = "GR_E2E_REDIS_SERVER"

// Spec describes one image: a single program FROM scratch, its default
// arguments and environment, the ports it exposes and the directories it
// needs. Exactly one of GoPackage and HostBinary is set.
type Spec struct {
	// Ref is the image reference to build, for example "gr-child:e2e".
	Ref string
	// GoPackage is a main package built with CGO_ENABLED=0 from the
	// repository root: "./cmd/child" or a module path from go.mod.
	GoPackage string
	// HostBinary is a dynamically linked program on this machine; it is
	// copied with exactly the shared libraries ldd reports and the loader.
	HostBinary string
	// Binary is the program's absolute path inside the image; it is the
	// image's ENTRYPOINT.
	Binary string
	// Cmd is the image's default CMD (arguments after the entrypoint).
	Cmd []string
	// Env is set in the image with ENV.
	Env map[string]string
	// Ports are exposed with EXPOSE ("6379/tcp").
	Ports []string
	// Dirs are created in the image, owned by root; /tmp gets mode 1777,
	// others 0755 (containers run as root: scratch has no other user).
	Dirs []string
}

// RedisArgs are the arguments gr-redis:e2e runs with by default: every
// interface, no RDB snapshots, an append-only file in /data. The harness
// appends to them (--replicaof, --requirepass, ...). They also suit the
// official redis image, whose entrypoint prepends redis-server to arguments
// that start with "-".
var RedisArgs = []string{
	"--port", "6379", "--bind", "0.0.0.0", "--protected-mode", "no",
	"--save", "", "--appendonly", "yes", "--dir", "/data",
}

// NATSArgs are the arguments gr-nats:e2e runs with by default: client port
// 4222, monitoring on 8222, JetStream with file storage in /data.
var NATSArgs = []string{"--port", "4222", "--http_port", "8222", "--jetstream", "--store_dir", "/data"}

// Redis is the spec of gr-redis:e2e.
func Redis() Spec {
	return Spec{
		Ref:        RedisRef,
		HostBinary: redisServerPath(),
		Binary:     "/usr/bin/redis-server",
		Cmd:        RedisArgs,
		Ports:      []string{RedisPort},
		Dirs:       []string{"/data", "/tmp"},
	}
}

func redisServerPath() string {
	if p := os.Getenv(EnvRedisServer); p != "" {
		return p
	}
	if p, err := exec.LookPath("redis-server"); err == nil {
		return p
	}
	return "/usr/bin/redis-server"
}

// NATS is the spec of gr-nats:e2e: nats-server's own main package, from the
// module version pinned in go.mod.
func NATS() Spec {
	return Spec{
		Ref:       NATSRef,
		GoPackage: "github.com/nats-io/nats-server/v2",
		Binary:    "/nats-server",
		Cmd:       NATSArgs,
		Ports:     []string{NATSPort, NATSMonitoring},
		Dirs:      []string{"/data", "/tmp"},
	}
}

// Child is the spec of gr-child:e2e, the region daemon of ./cmd/child. It
// listens on every interface by default (GR_LISTEN for RESP, GR_HTTP for
// its HTTP endpoint); configure it with the GR_* environment variables of
// `child --help`.
func Child() Spec {
	return Spec{
		Ref:       ChildRef,
		GoPackage: "./cmd/child",
		Binary:    "/child",
		Env:       map[string]string{"GR_LISTEN": "0.0.0.0:6380", "GR_HTTP": "0.0.0.0:9121"},
		Ports:     []string{ChildPort, ChildHTTPPort},
		Dirs:      []string{"/tmp"},
	}
}

// Manager is the spec of gr-manager:e2e, the channel-manager CLI of
// ./cmd/channel-manager. It has no default command: run it with the CLI's
// arguments (["run", "--nats", ...], ["verify", ...]).
func Manager() Spec {
	return Spec{
		Ref:       ManagerRef,
		GoPackage: "./cmd/channel-manager",
		Binary:    "/channel-manager",
		Dirs:      []string{"/tmp"},
	}
}

// RepoImages lists the images built from this repository's binaries: the
// child and the channel manager.
func RepoImages() []Spec {
	return []Spec{Child(), Manager()}
}

// All lists every image of the suite: Redis, NATS and RepoImages.
func All() []Spec {
	return append([]Spec{Redis(), NATS()}, RepoImages()...)
}
