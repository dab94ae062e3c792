package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/globalreplica/globalreplica/internal/testredis"
)

// getAvail does GET path on the HTTP endpoint at addr and decodes the JSON
// body into a map (to check the field names applications see).
func getAvail(t *testing.T, addr, path string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("GET %s: %s, body not JSON: %v", path, resp.Status, err)
	}
	return resp.StatusCode, body
}

// decodeAvail turns a body back into the typed answer.
func decodeAvail(t *testing.T, body map[string]any) Availability {
	t.Helper()
	b, _ := json.Marshal(body)
	var a Availability
	if err := json.Unmarshal(b, &a); err != nil {
		t.Fatal(err)
	}
	return a
}

// TestAvailability: against two real regions, the availability check is
// 200 while the inbound channel keeps up, 503 naming the channel with its
// lag once it is paused and the origin writes, back to 200 on resume;
// liveness and readiness answer; an unreachable origin is reported and
// counted only with strict=true.
func TestAvailability(t *testing.T) {
	rs := startRegions(t, "sgp", "fra")
	sgp, fra := rs[0], rs[1]
	ctx := context.Background()
	addr := fra.d.HTTPAddr()
	if err := sgp.c.Set(ctx, "warm", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	waitValue(t, fra.c, "warm", "1")

	for _, p := range []string{"/livez", "/healthz", "/readyz"} {
		if code, body := getAvail(t, addr, p); code != http.StatusOK || body["region"] != "fra" {
			t.Fatalf("GET %s = %d %v", p, code, body)
		}
	}
	code, body := getAvail(t, addr, "/availability?max_lag=100ms&max_lag_ops=0")
	a := decodeAvail(t, body)
	if code != http.StatusOK || !a.Available || !a.ServingWrites || a.Region != "fra" || len(a.Channels) != 1 ||
		a.Channels[0].Origin != "sgp" || !a.Channels[0].Measured || a.Channels[0].LagOps != 0 || len(a.Lagging) != 0 {
		t.Fatalf("caught up: %d %+v", code, a)
	}

	// Pause sgp -> fra and write 5 ops at sgp: fra lags by exactly 5 ops.
	if code := postStatus(t, addr, "/channels/sgp/pause"); code != http.StatusOK {
		t.Fatalf("pause: %d", code)
	}
	for i := range 5 {
		if err := sgp.c.Set(ctx, fmt.Sprintf("p%d", i), "x", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, body = getAvail(t, addr, "/availability?max_lag=100ms")
		if code == http.StatusServiceUnavailable || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	a = decodeAvail(t, body)
	if code != http.StatusServiceUnavailable || a.Available || !a.ServingWrites || len(a.Lagging) != 1 {
		t.Fatalf("paused and behind: %d %+v", code, a)
	}
	l := a.Lagging[0]
	if l.Origin != "sgp" || l.State != "paused" || l.LagOps != 5 || l.LagSeconds < 0.1 || !l.Measured || l.Within ||
		!strings.Contains(l.Reason, "max_lag 100ms") || !strings.Contains(a.Reason, "lagging behind sgp") {
		t.Fatalf("lagging channel: %+v (reason %q)", l, a.Reason)
	}
	if _, ok := body["lagging"].([]any); !ok {
		t.Fatalf("body has no lagging list: %v", body)
	}
	for q, want := range map[string]int{
		"max_lag_ops=4": http.StatusServiceUnavailable,
		"max_lag_ops=5": http.StatusOK,
		"max_lag=1h":    http.StatusOK,
		"":              http.StatusOK, // no tolerance: lag is reported, not checked
	} {
		code, body := getAvail(t, addr, "/availability?"+q)
		if code != want {
			t.Errorf("?%s = %d, want %d (%v)", q, code, want, body)
		}
	}
	if _, body := getAvail(t, addr, "/availability?max_lag_ops=4"); !strings.Contains(decodeAvail(t, body).Lagging[0].Reason, "lag 5 ops > max_lag_ops 4") {
		t.Errorf("ops reason: %v", body)
	}

	if code := postStatus(t, addr, "/channels/sgp/resume"); code != http.StatusOK {
		t.Fatalf("resume: %d", code)
	}
	waitValue(t, fra.c, "p4", "x")
	deadline = time.Now().Add(15 * time.Second)
	for {
		code, body = getAvail(t, addr, "/availability?max_lag_ops=0&max_lag=100ms")
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("resumed and caught up, still %d %v", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// The origin's NATS goes away: the lag cannot be measured. Reported,
	// counted only with strict=true.
	sgp.nats.Shutdown()
	sgp.nats.WaitForShutdown()
	code, body = getAvail(t, addr, "/availability?max_lag=1s")
	a = decodeAvail(t, body)
	if code != http.StatusOK || a.Channels[0].Measured || !a.Channels[0].Within || !strings.Contains(a.Channels[0].Reason, "lag unknown") {
		t.Fatalf("origin away, not strict: %d %+v", code, a)
	}
	code, body = getAvail(t, addr, "/availability?max_lag=1s&strict=true")
	a = decodeAvail(t, body)
	if code != http.StatusServiceUnavailable || len(a.Lagging) != 1 || !strings.Contains(a.Lagging[0].Reason, "strict") {
		t.Fatalf("origin away, strict: %d %+v", code, a)
	}
	sgp.nats.Restart()
}

func postStatus(t *testing.T, addr, path string) int {
	t.Helper()
	resp, err := http.Post("http://"+addr+path, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// TestAvailabilityBadParams: a bad query is a 400 naming the problem.
func TestAvailabilityBadParams(t *testing.T) {
	d, _ := startUnrun(t)
	h := d.routes()
	for q, want := range map[string]string{
		"max_lag=abc":              `max_lag "abc" is not a duration`,
		"max_lag=100":              `max_lag "100" has no unit`,
		"max_lag=-1s":              `max_lag "-1s" is not a duration >= 0`,
		"max_lag_ops=-1":           `max_lag_ops "-1" is not a whole number`,
		"max_lag_ops=1.5":          `max_lag_ops "1.5" is not a whole number`,
		"strict=maybe":             `strict "maybe" is not a boolean`,
		"maxlag=1s":                `unknown parameter "maxlag"`,
		"max_lag=1s&max_lag=2s":    `parameter max_lag given 2 times`,
		"max_lag_ops=1&bogus=true": `unknown parameter "bogus"`,
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/availability?"+q, nil))
		var body map[string]string
		_ = json.Unmarshal(rec.Body.Bytes(), &body)
		if rec.Code != http.StatusBadRequest || !strings.Contains(body["error"], want) {
			t.Errorf("?%s = %d %q, want 400 with %q", q, rec.Code, body["error"], want)
		}
	}
}

// TestAvailabilityNotReady: a region whose Redis is not marked ready for
// local writes, or is unreachable, is not ready and not available.
func TestAvailabilityNotReady(t *testing.T) {
	d, rd := startUnrun(t)
	h := d.routes()
	get := func(path string) (int, map[string]any) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		var body map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		return rec.Code, body
	}
	// Started, never run: the new Redis is not marked ready.
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body["reason"].(string), "not ready for local writes") {
		t.Fatalf("readyz before ready: %d %v", code, body)
	}
	code, body := get("/availability")
	if a := decodeAvail(t, body); code != http.StatusServiceUnavailable || a.Available || a.ServingWrites || !strings.Contains(a.Reason, "not ready") {
		t.Fatalf("availability before ready: %d %+v", code, a)
	}
	if code, _ := get("/livez"); code != http.StatusOK {
		t.Fatalf("livez: %d", code)
	}
	if err := d.Engine.MarkReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	if code, body := get("/readyz"); code != http.StatusOK {
		t.Fatalf("readyz when ready: %d %v", code, body)
	}
	if code, body := get("/availability?max_lag=10ms&max_lag_ops=0"); code != http.StatusOK {
		t.Fatalf("availability when ready, no channels: %d %v", code, body)
	}
	rd.Kill()
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body["reason"].(string), "redis unreachable") {
		t.Fatalf("readyz with Redis down: %d %v", code, body)
	}
	if code, body := get("/availability"); code != http.StatusServiceUnavailable || !strings.Contains(body["reason"].(string), "redis unreachable") {
		t.Fatalf("availability with Redis down: %d %v", code, body)
	}
}

// startUnrun starts a standalone region child (no NATS) without running it.
func startUnrun(t *testing.T) (*Daemon, *testredis.Server) {
	t.Helper()
	rd := testredis.Start(t)
	d, err := Start(context.Background(), Config{
		Instance: "test", Region: "fra", Listen: "127.0.0.1:0", Redis: *rd.Options(),
		Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Server.Close(context.Background()); d.close() })
	return d, rd
}

// TestCutOff: without strict, unmeasurable channels count only when they
// are most of at least two: a region cut off from the others is
// unavailable, the regions that lost one origin among several are not.
func TestCutOff(t *testing.T) {
	ch := func(measured bool) ChannelLag {
		c := ChannelLag{Measured: measured, Within: true}
		if !measured {
			c.Reason = "lag unknown, not counted (strict=false): nats: timeout"
		}
		return c
	}
	for _, tc := range []struct {
		name    string
		chs     []ChannelLag
		lagging int
	}{
		{"one origin away of two (a survivor)", []ChannelLag{ch(true), ch(false)}, 0},
		{"every origin away (this region is cut off)", []ChannelLag{ch(false), ch(false)}, 2},
		{"two of three away", []ChannelLag{ch(false), ch(true), ch(false)}, 2},
		{"the only origin away (two regions: cannot tell)", []ChannelLag{ch(false)}, 0},
		{"all measured", []ChannelLag{ch(true), ch(true)}, 0},
	} {
		cutOff(tc.chs)
		n := 0
		for _, c := range tc.chs {
			if !c.Within {
				n++
				if !strings.Contains(c.Reason, "its own link is likely cut") || !strings.Contains(c.Reason, "nats: timeout") {
					t.Errorf("%s: reason %q", tc.name, c.Reason)
				}
			}
		}
		if n != tc.lagging {
			t.Errorf("%s: %d channels counted as lagging, want %d", tc.name, n, tc.lagging)
		}
	}
}
