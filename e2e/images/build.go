package images

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/build"
	"github.com/moby/moby/client"
)

// Errors of the package.
var (
	ErrSpec       = errors.New("images: invalid spec")
	ErrGoBuild    = errors.New("images: go build failed")
	ErrLdd        = errors.New("images: ldd failed")
	ErrDocker     = errors.New("images: docker build failed")
	ErrArch       = errors.New("images: docker daemon architecture differs from this machine")
	ErrRepoRootNF = errors.New("images: repository root not found (no go.mod of " + Module + " above the working directory)")
)

// Module is the module path of this repository.
const Module = "github.com/globalreplica/globalreplica"

// EnvCacheDir overrides where the builder keeps the Go binaries between
// runs (default: $XDG_CACHE_HOME/globalreplica-e2e or ~/.cache/...).
const EnvCacheDir = "GR_E2E_CACHE_DIR"

// API is the part of the Docker client the builder uses; *client.Client
// implements it. Errors are the client's (cerrdefs.IsNotFound for a missing
// image).
type API interface {
	Info(ctx context.Context, options client.InfoOptions) (client.SystemInfoResult, error)
	ImageInspect(ctx context.Context, image string, opts ...client.ImageInspectOption) (client.ImageInspectResult, error)
	ImageBuild(ctx context.Context, buildContext io.Reader, options client.ImageBuildOptions) (client.ImageBuildResult, error)
	ImageRemove(ctx context.Context, image string, options client.ImageRemoveOptions) (client.ImageRemoveResult, error)
}

var _ API = (*client.Client)(nil)

// Builder builds images from Specs. The zero value is not usable: set
// Docker. A Builder is safe for concurrent use, but builds are serialised
// (two cores do not gain from parallel go builds and docker builds).
type Builder struct {
	// Docker is the Docker API client.
	Docker API
	// RepoRoot is this repository's root; empty: found by walking up from
	// the working directory to the go.mod of Module.
	RepoRoot string
	// CacheDir keeps the Go binaries between runs so that `go build` finds
	// them up to date; empty: $GR_E2E_CACHE_DIR or the user cache dir.
	CacheDir string
	// Logf, when set, receives one line per build step.
	Logf func(format string, args ...any)

	mu     sync.Mutex
	goarch string
}

// Result describes one image after Build.
type Result struct {
	Ref    string
	ID     string
	Hash   string // SHA-256 of the build context (label LabelHash)
	Size   int64  // bytes, as the daemon reports it
	Cached bool   // true when an image with the same hash existed: no docker build ran

	Inputs time.Duration // go build or ldd, plus assembling and hashing the context
	Docker time.Duration // docker build (0 when cached)
}

// Total is the time the image took, inputs and docker build.
func (r Result) Total() time.Duration { return r.Inputs + r.Docker }

func (r Result) String() string {
	state := "built"
	if r.Cached {
		state = "cached"
	}
	return fmt.Sprintf("%s %s in %s (inputs %s, docker build %s), %.1f MB, hash %.12s",
		r.Ref, state, r.Total().Round(time.Millisecond), r.Inputs.Round(time.Millisecond),
		r.Docker.Round(time.Millisecond), float64(r.Size)/1e6, r.Hash)
}

// BuildAll builds specs in order and returns their results; it stops at
// the first error.
func (b *Builder) BuildAll(ctx context.Context, specs []Spec) ([]Result, error) {
	out := make([]Result, 0, len(specs))
	for _, s := range specs {
		r, err := b.Build(ctx, s)
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}

// Build builds one image unless an image with the same context hash exists
// under s.Ref already.
func (b *Builder) Build(ctx context.Context, s Spec) (Result, error) {
	b.mu.Lock()
	defer b.mu.Unlock()

	res := Result{Ref: s.Ref}
	if err := s.validate(); err != nil {
		return res, err
	}
	start := time.Now()
	bc, err := b.context(ctx, s)
	if err != nil {
		return res, err
	}
	tarball, hash, err := bc.tar()
	if err != nil {
		return res, fmt.Errorf("images: %s: context: %w", s.Ref, err)
	}
	res.Hash = hash
	res.Inputs = time.Since(start)

	var oldID string
	switch img, err := b.Docker.ImageInspect(ctx, s.Ref); {
	case err == nil && img.Config != nil && img.Config.Labels[LabelHash] == hash:
		res.ID, res.Size, res.Cached = img.ID, img.Size, true
		b.logf("image %s", res)
		return res, nil
	case err == nil:
		oldID = img.ID
	case !cerrdefs.IsNotFound(err):
		return res, fmt.Errorf("%w: %s: inspect: %w", ErrDocker, s.Ref, err)
	}

	start = time.Now()
	if err := b.dockerBuild(ctx, s.Ref, hash, tarball); err != nil {
		return res, err
	}
	img, err := b.Docker.ImageInspect(ctx, s.Ref)
	if err != nil {
		return res, fmt.Errorf("%w: %s: inspect after build: %w", ErrDocker, s.Ref, err)
	}
	res.ID, res.Size, res.Docker = img.ID, img.Size, time.Since(start)
	if oldID != "" && oldID != img.ID {
		// The previous build lost its tag; drop it unless a container still uses it.
		if _, err := b.Docker.ImageRemove(ctx, oldID, client.ImageRemoveOptions{PruneChildren: true}); err != nil {
			b.logf("image %s: previous image %.19s kept: %v", s.Ref, oldID, err)
		}
	}
	b.logf("image %s", res)
	return res, nil
}

func (s Spec) validate() error {
	switch {
	case s.Ref == "":
		return fmt.Errorf("%w: empty Ref", ErrSpec)
	case (s.GoPackage == "") == (s.HostBinary == ""):
		return fmt.Errorf("%w: %s: set exactly one of GoPackage and HostBinary", ErrSpec, s.Ref)
	case !path.IsAbs(s.Binary):
		return fmt.Errorf("%w: %s: Binary %q must be an absolute path", ErrSpec, s.Ref, s.Binary)
	}
	return nil
}

// context assembles the build context of s: the program, its libraries
// (host binaries), the directories and the Dockerfile.
func (b *Builder) context(ctx context.Context, s Spec) (*buildContext, error) {
	bc := newBuildContext()
	arch, err := b.daemonArch(ctx)
	if err != nil {
		return nil, err
	}
	if s.GoPackage != "" {
		bin, err := b.goBuild(ctx, s, arch)
		if err != nil {
			return nil, err
		}
		if err := bc.addFile(s.Binary, bin); err != nil {
			return nil, err
		}
	} else {
		if arch != runtime.GOARCH {
			return nil, fmt.Errorf("%w: %s needs %s from this %s machine, the daemon runs %s", ErrArch, s.Ref, s.HostBinary, runtime.GOARCH, arch)
		}
		libs, err := sharedLibs(ctx, s.HostBinary)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.Ref, err)
		}
		if err := bc.addFile(s.Binary, s.HostBinary); err != nil {
			return nil, err
		}
		for _, lib := range libs {
			// The library lands at the path ldd printed; symlinks are
			// followed, so /lib64/ld-linux-x86-64.so.2 is a real file.
			if err := bc.addFile(lib, lib); err != nil {
				return nil, err
			}
		}
	}
	for _, d := range s.Dirs {
		mode := int64(0o755)
		if clean(d) == "/tmp" {
			mode = 0o1777
		}
		bc.addDir(d, mode)
	}
	bc.dockerfile = dockerfile([]string{s.Binary}, s.Cmd, s.Env, s.Ports)
	return bc, nil
}

// daemonArch returns the daemon's architecture as a GOARCH value.
func (b *Builder) daemonArch(ctx context.Context) (string, error) {
	if b.goarch != "" {
		return b.goarch, nil
	}
	info, err := b.Docker.Info(ctx, client.InfoOptions{})
	if err != nil {
		return "", fmt.Errorf("%w: docker info: %w", ErrDocker, err)
	}
	b.goarch = goarchOf(info.Info.Architecture)
	return b.goarch, nil
}

// goarchOf maps a kernel architecture name (uname -m, as docker info
// reports it) to GOARCH.
func goarchOf(machine string) string {
	switch machine {
	case "x86_64", "amd64":
		return "amd64"
	case "aarch64", "arm64":
		return "arm64"
	case "armv7l", "armhf":
		return "arm"
	case "s390x", "ppc64le", "riscv64":
		return machine
	}
	return runtime.GOARCH
}

// goBuild builds s.GoPackage as a static linux binary into the cache dir
// and returns its path. The output file stays between runs so that go
// build relinks only when an input changed.
func (b *Builder) goBuild(ctx context.Context, s Spec, goarch string) (string, error) {
	root, err := b.repoRoot()
	if err != nil {
		return "", err
	}
	cache, err := b.cacheDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, "bin", "linux_"+goarch, safeName(s.Ref))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("images: %w", err)
	}
	out := filepath.Join(dir, path.Base(s.Binary))
	goBin, err := goTool()
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", out, s.GoPackage)
	cmd.Dir = root
	cmd.Env = append(buildEnv(os.Environ()), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%w: %s (%s): %w\n%s", ErrGoBuild, s.GoPackage, s.Ref, err, strings.TrimSpace(stderr.String()))
	}
	b.logf("go build %s (%s) in %s", s.GoPackage, s.Ref, time.Since(start).Round(time.Millisecond))
	return out, nil
}

// buildEnv is the environment of go build: the caller's, without settings
// that cannot apply to a static cross build (-race needs cgo).
func buildEnv(environ []string) []string {
	out := make([]string, 0, len(environ))
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "CGO_ENABLED", "GOOS", "GOARCH":
			continue
		case "GOFLAGS":
			var keep []string
			for f := range strings.FieldsSeq(v) {
				if f != "-race" && !strings.HasPrefix(f, "-race=") {
					keep = append(keep, f)
				}
			}
			kv = "GOFLAGS=" + strings.Join(keep, " ")
		}
		out = append(out, kv)
	}
	return out
}

func goTool() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	if root := os.Getenv("GOROOT"); root != "" {
		p := filepath.Join(root, "bin", "go")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: the go command is not on PATH", ErrGoBuild)
}

func (b *Builder) repoRoot() (string, error) {
	if b.RepoRoot != "" {
		return b.RepoRoot, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("images: %w", err)
	}
	root, err := FindRepoRoot(dir)
	if err != nil {
		return "", err
	}
	b.RepoRoot = root
	return root, nil
}

// FindRepoRoot walks up from dir to the directory whose go.mod declares
// Module.
func FindRepoRoot(dir string) (string, error) {
	for d := dir; ; d = filepath.Dir(d) {
		if data, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && modulePath(data) == Module {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", ErrRepoRootNF
		}
	}
}

func modulePath(gomod []byte) string {
	for line := range strings.SplitSeq(string(gomod), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`)
		}
	}
	return ""
}

func (b *Builder) cacheDir() (string, error) {
	if b.CacheDir != "" {
		return b.CacheDir, nil
	}
	if d := os.Getenv(EnvCacheDir); d != "" {
		b.CacheDir = d
		return d, nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		d = os.TempDir()
	}
	b.CacheDir = filepath.Join(d, "globalreplica-e2e")
	return b.CacheDir, nil
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

func safeName(s string) string { return unsafeChars.ReplaceAllString(s, "_") }

// sharedLibs runs ldd on bin and returns the absolute paths of the shared
// libraries and the dynamic loader it links, in ldd's order.
func sharedLibs(ctx context.Context, bin string) ([]string, error) {
	out, err := exec.CommandContext(ctx, "ldd", bin).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("%w: ldd %s: %w: %s", ErrLdd, bin, err, strings.TrimSpace(string(out)))
	}
	return parseLdd(string(out))
}

// parseLdd extracts library paths from ldd output. Lines look like
//
//	linux-vdso.so.1 (0x00007ffd...)                     (virtual: skipped)
//	libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)
//	/lib64/ld-linux-x86-64.so.2 (0x...)                  (the loader)
//	libfoo.so.1 => not found                             (an error)
func parseLdd(out string) ([]string, error) {
	var libs []string
	seen := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.Contains(line, "statically linked") {
			continue
		}
		name, target, arrow := strings.Cut(line, "=>")
		if arrow {
			target = strings.TrimSpace(target)
			if strings.HasPrefix(target, "not found") {
				return nil, fmt.Errorf("%w: %s not found", ErrLdd, strings.TrimSpace(name))
			}
		} else {
			target = name
		}
		p, _, _ := strings.Cut(strings.TrimSpace(target), " (")
		p = strings.TrimSpace(p)
		if !strings.HasPrefix(p, "/") {
			continue // linux-vdso.so.1 and friends live in the kernel
		}
		if !seen[p] {
			seen[p] = true
			libs = append(libs, p)
		}
	}
	if len(libs) == 0 {
		return nil, fmt.Errorf("%w: no libraries in ldd output %q", ErrLdd, out)
	}
	return libs, nil
}

// buildMessage is one JSON message of the build output stream.
type buildMessage struct {
	Stream      string `json:"stream"`
	Error       string `json:"error"`
	ErrorDetail *struct {
		Message string `json:"message"`
	} `json:"errorDetail"`
}

func (b *Builder) dockerBuild(ctx context.Context, ref, hash string, tarball []byte) error {
	resp, err := b.Docker.ImageBuild(ctx, bytes.NewReader(tarball), client.ImageBuildOptions{
		Tags:        []string{ref},
		Dockerfile:  "Dockerfile",
		Remove:      true,
		ForceRemove: true,
		Labels:      map[string]string{LabelImage: "1", LabelHash: hash},
		Version:     build.BuilderV1, // the classic builder: no BuildKit session needed, FROM scratch pulls nothing
	})
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrDocker, ref, err)
	}
	defer func() { _ = resp.Body.Close() }()
	var log strings.Builder
	dec := json.NewDecoder(resp.Body)
	for {
		var m buildMessage
		if err := dec.Decode(&m); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("%w: %s: reading build output: %w\n%s", ErrDocker, ref, err, log.String())
		}
		log.WriteString(m.Stream)
		msg := m.Error
		if m.ErrorDetail != nil && m.ErrorDetail.Message != "" {
			msg = m.ErrorDetail.Message
		}
		if msg != "" {
			return fmt.Errorf("%w: %s: %s\n%s", ErrDocker, ref, msg, log.String())
		}
	}
}

func (b *Builder) logf(format string, args ...any) {
	if b.Logf != nil {
		b.Logf(format, args...)
	}
}
