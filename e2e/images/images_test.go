package images

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// These tests need no Docker engine: the builds themselves run in the e2e
// package, where every test uses the images.

func TestParseLdd(t *testing.T) {
	out := `	linux-vdso.so.1 (0x00007ffc8a5f2000)
	libatomic.so.1 => /lib/x86_64-linux-gnu/libatomic.so.1 (0x00007f7b2338a000)
	libm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f7b232a4000)
	libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f7b2241e000)
	/lib64/ld-linux-x86-64.so.2 (0x00007f7b233a7000)
	libm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f7b232a4000)
`
	got, err := parseLdd(out)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"/lib/x86_64-linux-gnu/libatomic.so.1",
		"/lib/x86_64-linux-gnu/libm.so.6",
		"/lib/x86_64-linux-gnu/libc.so.6",
		"/lib64/ld-linux-x86-64.so.2",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("parseLdd = %q, want %q", got, want)
	}

	for _, bad := range []string{
		"\tlibfoo.so.1 => not found\n\tlibc.so.6 => /lib/libc.so.6 (0x1)\n",
		"\tnot a dynamic executable\n",
		"",
	} {
		if _, err := parseLdd(bad); !errors.Is(err, ErrLdd) {
			t.Errorf("parseLdd(%q) error = %v, want ErrLdd", bad, err)
		}
	}
}

// The context of a real host binary holds its libraries at the paths ldd
// prints, with symlinks resolved to files.
func TestSharedLibsOfThisMachine(t *testing.T) {
	bin := redisServerPath()
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("redis-server (%s): %v; install it with `go tool task deps`", bin, err)
	}
	libs, err := sharedLibs(t.Context(), bin)
	if err != nil {
		t.Fatal(err)
	}
	hasLoader := false
	for _, l := range libs {
		if strings.Contains(filepath.Base(l), "ld-linux") {
			hasLoader = true
		}
		if _, err := os.Stat(l); err != nil {
			t.Errorf("library %s: %v", l, err)
		}
	}
	if !hasLoader {
		t.Errorf("no dynamic loader among %q", libs)
	}
}

func TestContextIsDeterministic(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "prog")
	if err := os.WriteFile(bin, []byte("\x7fELF program"), 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "prog-link")
	if err := os.Symlink(bin, link); err != nil {
		t.Fatal(err)
	}
	mk := func(src string) *buildContext {
		c := newBuildContext()
		c.addDir("/tmp", 0o1777)
		c.addDir("/data", 0o755)
		if err := c.addFile("/usr/bin/prog", src); err != nil {
			t.Fatal(err)
		}
		c.dockerfile = dockerfile([]string{"/usr/bin/prog"}, []string{"--save", ""}, nil, []string{"6379/tcp"})
		return c
	}
	b1, h1, err := mk(bin).tar()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(bin, time.Unix(1e9, 0), time.Unix(1e9, 0)); err != nil {
		t.Fatal(err)
	}
	b2, h2, err := mk(link).tar() // through a symlink, other mtime: same bytes
	if err != nil {
		t.Fatal(err)
	}
	if h1 != h2 || !bytes.Equal(b1, b2) {
		t.Fatalf("same inputs gave different contexts: %s vs %s", h1, h2)
	}

	if err := os.WriteFile(bin, []byte("\x7fELF program v2"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, h3, _ := mk(bin).tar(); h3 == h1 {
		t.Fatal("changed binary kept the hash")
	}

	// The tar holds the Dockerfile, the parents of every file, and modes.
	modes := map[string]int64{}
	tr := tar.NewReader(bytes.NewReader(b1))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		modes[h.Name] = h.Mode
	}
	want := map[string]int64{
		"Dockerfile": 0o644, "rootfs/": 0o755, "rootfs/data/": 0o755, "rootfs/tmp/": 0o1777,
		"rootfs/usr/": 0o755, "rootfs/usr/bin/": 0o755, "rootfs/usr/bin/prog": 0o755,
	}
	for name, mode := range want {
		if got, ok := modes[name]; !ok || got != mode {
			t.Errorf("entry %s: mode %o (present %v), want %o", name, got, ok, mode)
		}
	}
	if len(modes) != len(want) {
		t.Errorf("entries %v, want %v", modes, want)
	}
}

func TestDockerfile(t *testing.T) {
	got := dockerfile([]string{"/child"}, []string{"--save", "", `a"b`},
		map[string]string{"GR_LISTEN": "0.0.0.0:6380", "A": "1"}, []string{"6380/tcp", "8222/tcp"})
	want := `FROM scratch
COPY rootfs/ /
ENV A="1"
ENV GR_LISTEN="0.0.0.0:6380"
EXPOSE 6380/tcp 8222/tcp
ENTRYPOINT ["/child"]
CMD ["--save", "", "a\"b"]
`
	if got != want {
		t.Fatalf("dockerfile:\n%s\nwant:\n%s", got, want)
	}
}

func TestBuildEnvDropsRace(t *testing.T) {
	got := buildEnv([]string{"PATH=/bin", "GOFLAGS=-race -mod=mod -race=true", "CGO_ENABLED=1", "GOARCH=386", "HOME=/root"})
	want := []string{"PATH=/bin", "GOFLAGS=-mod=mod", "HOME=/root"}
	if !slices.Equal(got, want) {
		t.Fatalf("buildEnv = %q, want %q", got, want)
	}
}

func TestSpecs(t *testing.T) {
	refs := map[string]bool{}
	for _, s := range All() {
		if err := s.validate(); err != nil {
			t.Errorf("%s: %v", s.Ref, err)
		}
		if refs[s.Ref] {
			t.Errorf("duplicate ref %s", s.Ref)
		}
		refs[s.Ref] = true
	}
	for _, bad := range []Spec{
		{},
		{Ref: "x:y", Binary: "/x"},
		{Ref: "x:y", GoPackage: "./cmd/x", HostBinary: "/bin/x", Binary: "/x"},
		{Ref: "x:y", GoPackage: "./cmd/x", Binary: "x"},
	} {
		if err := bad.validate(); !errors.Is(err, ErrSpec) {
			t.Errorf("validate(%+v) = %v, want ErrSpec", bad, err)
		}
	}
}

func TestFindRepoRoot(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	root, err := FindRepoRoot(wd)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "e2e", "images", "build.go")); err != nil {
		t.Fatalf("root %s: %v", root, err)
	}
	if _, err := FindRepoRoot(t.TempDir()); !errors.Is(err, ErrRepoRootNF) {
		t.Fatalf("FindRepoRoot(tmp) = %v, want ErrRepoRootNF", err)
	}
}

func TestGoarchOf(t *testing.T) {
	for in, want := range map[string]string{"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"} {
		if got := goarchOf(in); got != want {
			t.Errorf("goarchOf(%q) = %q, want %q", in, got, want)
		}
	}
}
