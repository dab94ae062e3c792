package images

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path"
	"sort"
	"strings"
	"time"
)

// buildContext is the in-memory description of a Docker build context: a
// Dockerfile and a root file system (under rootfs/) copied into the image
// with one COPY.
type buildContext struct {
	dockerfile string
	entries    map[string]entry // path inside the image (absolute) → entry
}

// entry is one file or directory of the image's root file system.
type entry struct {
	dir  bool
	mode int64  // Unix permission bits, including setuid/setgid/sticky (01777)
	src  string // host file to read (symlinks followed); empty for dirs
}

func newBuildContext() *buildContext {
	return &buildContext{entries: map[string]entry{}}
}

// addFile puts the content of the host file src (symlinks followed) at dst
// in the image, keeping the permission bits of the resolved file.
func (c *buildContext) addFile(dst, src string) error {
	fi, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("images: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("images: %s is not a regular file", src)
	}
	c.addParents(dst)
	c.entries[clean(dst)] = entry{mode: int64(fi.Mode().Perm()), src: src}
	return nil
}

// addDir creates the directory dst (and its parents) in the image.
func (c *buildContext) addDir(dst string, mode int64) {
	c.addParents(dst)
	c.entries[clean(dst)] = entry{dir: true, mode: mode}
}

func (c *buildContext) addParents(dst string) {
	for p := path.Dir(clean(dst)); p != "/"; p = path.Dir(p) {
		if _, ok := c.entries[p]; !ok {
			c.entries[p] = entry{dir: true, mode: 0o755}
		}
	}
}

func clean(p string) string { return path.Clean("/" + p) }

// tar writes the context as a deterministic tar stream and returns it with
// its SHA-256: the same inputs always give the same bytes.
func (c *buildContext) tar() ([]byte, string, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	hdr := func(name string, mode, size int64, typ byte) *tar.Header {
		return &tar.Header{Name: name, Mode: mode, Size: size, Typeflag: typ,
			ModTime: epoch, AccessTime: epoch, ChangeTime: epoch, Format: tar.FormatPAX}
	}
	if err := tw.WriteHeader(hdr("Dockerfile", 0o644, int64(len(c.dockerfile)), tar.TypeReg)); err != nil {
		return nil, "", err
	}
	if _, err := tw.Write([]byte(c.dockerfile)); err != nil {
		return nil, "", err
	}
	if err := tw.WriteHeader(hdr("rootfs/", 0o755, 0, tar.TypeDir)); err != nil {
		return nil, "", err
	}

	names := make([]string, 0, len(c.entries))
	for p := range c.entries {
		names = append(names, p)
	}
	sort.Strings(names) // parents sort before their children
	for _, p := range names {
		e := c.entries[p]
		name := "rootfs" + p
		if e.dir {
			if err := tw.WriteHeader(hdr(name+"/", e.mode, 0, tar.TypeDir)); err != nil {
				return nil, "", err
			}
			continue
		}
		data, err := os.ReadFile(e.src)
		if err != nil {
			return nil, "", fmt.Errorf("images: %w", err)
		}
		if err := tw.WriteHeader(hdr(name, e.mode, int64(len(data)), tar.TypeReg)); err != nil {
			return nil, "", err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, "", err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(buf.Bytes())
	return buf.Bytes(), hex.EncodeToString(sum[:]), nil
}

// dockerfile renders the Dockerfile of an image whose whole file system is
// the context's rootfs/ directory. Exec-form instructions only: the image
// has no shell.
func dockerfile(entrypoint, cmd []string, env map[string]string, ports []string) string {
	var b strings.Builder
	b.WriteString("FROM scratch\nCOPY rootfs/ /\n")
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "ENV %s=%s\n", k, quote(env[k]))
	}
	if len(ports) > 0 {
		b.WriteString("EXPOSE " + strings.Join(ports, " ") + "\n")
	}
	b.WriteString("ENTRYPOINT " + jsonArray(entrypoint) + "\n")
	if len(cmd) > 0 {
		b.WriteString("CMD " + jsonArray(cmd) + "\n")
	}
	return b.String()
}

func jsonArray(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = quote(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// quote returns s as a JSON string literal (which Dockerfile exec form and
// ENV values accept).
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"', '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case '\n':
			b.WriteString(`\n`)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
