package harness

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/globalreplica/globalreplica/e2e/images"
)

// imageState is the outcome of building one image, once per process.
type imageState struct {
	once sync.Once
	ref  string
	res  images.Result
	err  error
}

var (
	builder   *images.Builder
	builderMu sync.Mutex
	imageMu   sync.Mutex
	built     = map[string]*imageState{}
)

// ImageBuildTimeout bounds the build of one image, go build included (a
// cold nats-server build takes about a minute on two cores).
const ImageBuildTimeout = 8 * time.Minute

// Image returns the reference to run for spec, building it on first use in
// this process (later calls return the first outcome). GR_E2E_REDIS_IMAGE
// and GR_E2E_NATS_IMAGE replace the Redis and NATS images with images the
// engine has or can pull. The build's timings are logged to t.
func Image(t testing.TB, spec images.Spec) string {
	t.Helper()
	ref, _ := image(t, spec)
	return ref
}

// BuildImages builds every image of specs (see Image) and returns the
// results of those built or found cached by this call's process; images
// replaced through the environment are left out.
func BuildImages(t testing.TB, specs ...images.Spec) []images.Result {
	t.Helper()
	var out []images.Result
	for _, s := range specs {
		if _, res := image(t, s); res != nil {
			out = append(out, *res)
		}
	}
	return out
}

func image(t testing.TB, spec images.Spec) (string, *images.Result) {
	t.Helper()
	if override := imageOverride(spec.Ref); override != "" {
		return override, nil
	}
	cli, err := dockerClient(t.Context())
	if err != nil {
		t.Fatal(err)
	}

	imageMu.Lock()
	st, ok := built[spec.Ref]
	if !ok {
		st = &imageState{ref: spec.Ref}
		built[spec.Ref] = st
	}
	imageMu.Unlock()

	st.once.Do(func() {
		builderMu.Lock()
		if builder == nil {
			builder = &images.Builder{Docker: cli}
		}
		b := builder
		builderMu.Unlock()
		// Not the test's context: a build that one test starts serves the
		// whole process and must not die with that test.
		ctx, cancel := context.WithTimeout(context.Background(), ImageBuildTimeout)
		defer cancel()
		st.res, st.err = b.Build(ctx, spec)
		if st.err == nil {
			t.Logf("image %s", st.res)
		}
	})
	if st.err != nil {
		t.Fatalf("harness: image %s: %v", spec.Ref, st.err)
	}
	return st.ref, &st.res
}

func imageOverride(ref string) string {
	switch ref {
	case images.RedisRef:
		return os.Getenv(EnvRedisImage)
	case images.NATSRef:
		return os.Getenv(EnvNATSImage)
	}
	return ""
}
