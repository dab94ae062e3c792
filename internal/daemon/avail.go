package daemon

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/globalreplica/globalreplica/channel"
)

// Budgets of the health endpoints. A probe must answer quickly even when a
// peer region is unreachable: measuring a channel's lag waits at most
// lagMeasureTimeout for the origin's JetStream, and the channels are
// measured concurrently.
const (
	readyTimeout      = time.Second
	lagMeasureTimeout = 300 * time.Millisecond
)

// Availability is the body of GET /availability.
type Availability struct {
	Region string `json:"region"`
	// Available: the region serves writes and every inbound channel is
	// within the tolerance given (the HTTP status is 200, else 503).
	Available bool `json:"available"`
	// ServingWrites: the region's Redis is reachable and marked ready for
	// local writes.
	ServingWrites bool   `json:"serving_writes"`
	Reason        string `json:"reason,omitempty"` // why it is not available
	// The tolerance applied (absent: not checked).
	MaxLag    string  `json:"max_lag,omitempty"`
	MaxLagOps *uint64 `json:"max_lag_ops,omitempty"`
	Strict    bool    `json:"strict,omitempty"`
	// Channels: every inbound channel; Lagging: those outside the
	// tolerance.
	Channels []ChannelLag `json:"channels"`
	Lagging  []ChannelLag `json:"lagging,omitempty"`
}

// ChannelLag is one inbound channel in an availability answer.
type ChannelLag struct {
	Origin     string  `json:"origin"`
	State      string  `json:"state"`
	LagOps     uint64  `json:"lag_ops"`
	LagSeconds float64 `json:"lag_seconds"`
	// Measured: the lag was measured now against the origin's stream.
	// false: the origin could not be reached and the figures are those of
	// the channel's last applied batch.
	Measured  bool   `json:"measured"`
	Within    bool   `json:"within_tolerance"`
	Reason    string `json:"reason,omitempty"` // why it is lagging or its lag unknown
	LastError string `json:"last_error,omitempty"`
}

// availQuery is the parsed query of GET /availability.
type availQuery struct {
	maxLag    time.Duration
	hasLag    bool
	maxLagOps uint64
	hasOps    bool
	strict    bool
}

// parseAvailQuery parses max_lag (a duration such as 100ms or 2s),
// max_lag_ops (a count) and strict (a boolean). Unknown or repeated
// parameters are errors, so that a typo does not silently turn a check off.
func parseAvailQuery(r *http.Request) (availQuery, error) {
	var q availQuery
	for key, vals := range r.URL.Query() {
		if len(vals) != 1 {
			return q, fmt.Errorf("parameter %s given %d times", key, len(vals))
		}
		v := vals[0]
		switch key {
		case "max_lag":
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 {
				if _, nerr := strconv.ParseUint(v, 10, 64); nerr == nil {
					return q, fmt.Errorf("max_lag %q has no unit: give a duration such as 100ms or 2s", v)
				}
				return q, fmt.Errorf("max_lag %q is not a duration >= 0 (such as 100ms or 2s)", v)
			}
			q.maxLag, q.hasLag = d, true
		case "max_lag_ops":
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return q, fmt.Errorf("max_lag_ops %q is not a whole number >= 0", v)
			}
			q.maxLagOps, q.hasOps = n, true
		case "strict":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return q, fmt.Errorf("strict %q is not a boolean (true or false)", v)
			}
			q.strict = b
		default:
			return q, fmt.Errorf("unknown parameter %q (max_lag, max_lag_ops, strict)", key)
		}
	}
	return q, nil
}

// servingWrites reports whether the region serves local writes: its Redis
// answers and is marked ready (see ensureReady). The reason says why not.
func (d *Daemon) servingWrites(ctx context.Context) (bool, string) {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	ready, err := d.Engine.Ready(ctx)
	switch {
	case err != nil:
		return false, "redis unreachable: " + err.Error()
	case !ready:
		return false, "not ready for local writes: the region's Redis is new, was wiped or restored, and is being recovered"
	}
	return true, ""
}

// handleReadyz serves GET /readyz: 200 when the region serves writes.
func (d *Daemon) handleReadyz(w http.ResponseWriter, r *http.Request) {
	ok, reason := d.servingWrites(r.Context())
	if !ok {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "region": d.cfg.Region, "reason": reason})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready", "region": d.cfg.Region})
}

// handleAvailability serves GET /availability: 200 when the region serves
// writes and every inbound channel is within the lag tolerance of the
// query, 503 otherwise, 400 for a bad query.
func (d *Daemon) handleAvailability(w http.ResponseWriter, r *http.Request) {
	q, err := parseAvailQuery(r)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "availability: " + err.Error()})
		return
	}
	a := d.availability(r.Context(), q)
	code := http.StatusOK
	if !a.Available {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, a)
}

// availability answers the query q.
func (d *Daemon) availability(ctx context.Context, q availQuery) Availability {
	a := Availability{Region: d.cfg.Region, Strict: q.strict, Channels: []ChannelLag{}}
	if q.hasLag {
		a.MaxLag = q.maxLag.String()
	}
	if q.hasOps {
		a.MaxLagOps = &q.maxLagOps
	}
	var wg sync.WaitGroup
	wg.Go(func() { a.ServingWrites, a.Reason = d.servingWrites(ctx) })
	if d.Node != nil {
		sts := d.Statuses()
		a.Channels = make([]ChannelLag, len(sts))
		for i, st := range sts {
			wg.Go(func() { a.Channels[i] = d.channelLag(ctx, st, q) })
		}
	}
	wg.Wait()
	if (q.hasLag || q.hasOps) && !q.strict {
		cutOff(a.Channels)
	}
	for _, c := range a.Channels {
		if !c.Within {
			a.Lagging = append(a.Lagging, c)
		}
	}
	a.Available = a.ServingWrites && len(a.Lagging) == 0
	if a.ServingWrites && !a.Available {
		names := make([]string, len(a.Lagging))
		for i, c := range a.Lagging {
			names[i] = c.Origin
		}
		a.Reason = "lagging behind " + strings.Join(names, ", ")
	}
	return a
}

// cutOff tells a region that is cut off from the others from one whose
// origin is: without strict, a channel whose lag cannot be measured is not
// counted, because its origin is unreachable for every region alike. But
// when this region cannot measure more than half of at least two inbound
// channels, the likelier cause is on this side (its own link is cut), and
// every unmeasured channel counts as lagging. With two regions, each sees
// one channel and cannot tell; strict=true decides then.
func cutOff(chs []ChannelLag) {
	var unknown []int
	for i, c := range chs {
		if !c.Measured && c.Within {
			unknown = append(unknown, i)
		}
	}
	if len(chs) < 2 || 2*len(unknown) <= len(chs) {
		return
	}
	for _, i := range unknown {
		chs[i].Within = false
		chs[i].Reason = fmt.Sprintf("lag unknown: this region cannot measure %d of its %d inbound channels; its own link is likely cut (%s)",
			len(unknown), len(chs), strings.TrimPrefix(chs[i].Reason, "lag unknown, not counted (strict=false): "))
	}
}

// channelLag measures the channel st.Origin → here and compares it with the
// tolerance of q.
func (d *Daemon) channelLag(ctx context.Context, st channel.Status, q availQuery) ChannelLag {
	c := ChannelLag{Origin: st.Origin, State: st.State, LagOps: st.LagOps, LagSeconds: st.LagSeconds, LastError: st.LastError, Within: true}
	var lagErr error
	if recv, ok := d.Node.Receiver(st.Origin); ok {
		mctx, cancel := context.WithTimeout(ctx, lagMeasureTimeout)
		lag, err := recv.MeasureLag(mctx)
		cancel()
		if err == nil {
			c.Measured, c.LagOps, c.LagSeconds = true, lag.Ops, lag.Age.Seconds()
		}
		lagErr = err
	}
	checked := q.hasLag || q.hasOps
	switch {
	case !checked:
		if lagErr != nil {
			c.Reason = "lag unknown: " + lagErr.Error()
		}
	case st.State == channel.StateNeedsRebuild:
		c.Within, c.Reason = false, "needs rebuild: ops it misses have aged out of the origin's stream"
	case lagErr != nil && q.strict:
		c.Within, c.Reason = false, "lag unknown (strict): "+lagErr.Error()
	case lagErr != nil:
		// The origin is unreachable: nothing it writes now can reach any
		// region, so this one is not behind the others because of it.
		// strict=true counts it as lagging.
		c.Reason = "lag unknown, not counted (strict=false): " + lagErr.Error()
	case q.hasLag && c.LagSeconds > q.maxLag.Seconds():
		c.Within, c.Reason = false, fmt.Sprintf("lag %s > max_lag %s", secs(c.LagSeconds), q.maxLag)
	case q.hasOps && c.LagOps > q.maxLagOps:
		c.Within, c.Reason = false, fmt.Sprintf("lag %d ops > max_lag_ops %d", c.LagOps, q.maxLagOps)
	}
	return c
}

func secs(s float64) string {
	return time.Duration(s * float64(time.Second)).Round(time.Millisecond).String()
}
