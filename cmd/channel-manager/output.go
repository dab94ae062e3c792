package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/globalreplica/globalreplica/manager"
)

// The JSON shapes of the CLI. Field names are stable, every field is
// always present (no omitempty), times are RFC 3339 in UTC and durations
// strings like "168h0m0s".

type instanceView struct {
	Name            string    `json:"name"`
	Retention       string    `json:"retention"`
	Created         time.Time `json:"created"`
	Regions         int       `json:"regions"`
	Channels        int       `json:"channels"`
	ConfigBucket    string    `json:"config_bucket"`
	HeartbeatBucket string    `json:"heartbeat_bucket"`
	Lock            *lockView `json:"lock"` // null when no manager holds it
}

type lockView struct {
	Holder   string    `json:"holder"`
	Purpose  string    `json:"purpose"`
	Acquired time.Time `json:"acquired"`
	Expires  time.Time `json:"expires"`
}

type regionView struct {
	ID       string    `json:"id"`
	State    string    `json:"state"` // active, evicted, rebuilding (<phase>) or rebuild failed
	NATS     string    `json:"nats"`
	Redis    string    `json:"redis"`
	Replica  string    `json:"replica"`
	Evicted  bool      `json:"evicted"`
	Added    time.Time `json:"added"`
	Children int       `json:"children"` // child processes with a fresh heartbeat
	// Rebuild is the region's last rebuild request, while it runs or once
	// it failed (the region then refuses writes until a rebuild succeeds).
	Rebuild *manager.Rebuild `json:"rebuild,omitempty"`
}

type channelView struct {
	Origin      string  `json:"origin"`
	Dest        string  `json:"dest"`
	Paused      bool    `json:"paused"`
	OpsPerSec   float64 `json:"ops_per_sec"`   // 0: unlimited
	BytesPerSec float64 `json:"bytes_per_sec"` // 0: unlimited
}

// regionChange is the result of region add, remove and evict.
type regionChange struct {
	Region  regionView    `json:"region"`
	Created []channelView `json:"channels_created"`
	Removed []channelView `json:"channels_removed"`
}

func newInstanceView(in manager.Instance, st manager.State, lock *manager.LockInfo) instanceView {
	v := instanceView{
		Name: in.Name, Retention: in.Retention.String(), Created: in.Created.UTC(),
		Regions: len(st.Regions), Channels: len(st.Channels),
		ConfigBucket: manager.ConfigBucket(in.Name), HeartbeatBucket: manager.HeartbeatBucket(in.Name),
	}
	if lock != nil {
		v.Lock = &lockView{Holder: lock.Holder, Purpose: lock.Purpose, Acquired: lock.Acquired.UTC(), Expires: lock.Expires.UTC()}
	}
	return v
}

func newRegionView(r manager.Region, children int) regionView {
	v := regionView{ID: r.ID, State: "active", NATS: r.NATS, Redis: r.Redis, Replica: r.Replica, Evicted: r.Evicted, Added: r.Added.UTC(), Children: children}
	switch {
	case r.Evicted:
		v.State = "evicted"
	case r.Rebuild.Active():
		v.State, v.Rebuild = "rebuilding ("+r.Rebuild.Phase+")", r.Rebuild
	case r.Rebuild != nil && r.Rebuild.Phase == manager.RebuildFailed:
		v.State, v.Rebuild = "rebuild failed", r.Rebuild
	}
	return v
}

func newChannelView(c manager.Channel) channelView {
	return channelView{Origin: c.Origin, Dest: c.Dest, Paused: c.Paused, OpsPerSec: c.OpsPerSec, BytesPerSec: c.BytesPerSec}
}

func channelViews(cs []manager.Channel) []channelView {
	out := make([]channelView, len(cs))
	for i, c := range cs {
		out[i] = newChannelView(c)
	}
	return out
}

// print writes v as JSON with --json, else the human form.
func (a *app) print(v any, human func(w io.Writer) error) error {
	if a.g.json {
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	return human(a.stdout)
}

// table writes rows under a header, aligned in columns.
func table(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if _, err := fmt.Fprintln(tw, strings.Join(header, "\t")); err != nil {
		return err
	}
	for _, r := range rows {
		if _, err := fmt.Fprintln(tw, strings.Join(r, "\t")); err != nil {
			return err
		}
	}
	return tw.Flush()
}

// rate formats a throttle limit: "-" for unlimited.
func rate(v float64) string {
	if v == 0 {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

// orDash returns s, or "-" when it is empty.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// when formats a time for tables.
func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// pairs lists channels as "a->b, c->d".
func pairs(cs []channelView) string {
	if len(cs) == 0 {
		return "none"
	}
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Origin + "->" + c.Dest
	}
	return strings.Join(out, ", ")
}

func instanceTable(w io.Writer, v instanceView) error {
	rows := [][]string{
		{"name", v.Name},
		{"retention", v.Retention},
		{"created", when(v.Created)},
		{"regions", strconv.Itoa(v.Regions)},
		{"channels", strconv.Itoa(v.Channels)},
		{"config bucket", v.ConfigBucket},
		{"heartbeat bucket", v.HeartbeatBucket},
	}
	lock := "free"
	if v.Lock != nil {
		lock = fmt.Sprintf("held by %s (%s) until %s", v.Lock.Holder, orDash(v.Lock.Purpose), when(v.Lock.Expires))
	}
	rows = append(rows, []string{"lock", lock})
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, r := range rows {
		if _, err := fmt.Fprintf(tw, "%s:\t%s\n", r[0], r[1]); err != nil {
			return err
		}
	}
	return tw.Flush()
}

func regionTable(w io.Writer, rs []regionView) error {
	rows := make([][]string, len(rs))
	for i, r := range rs {
		rows[i] = []string{r.ID, r.State, r.NATS, r.Redis, orDash(r.Replica), strconv.Itoa(r.Children), when(r.Added)}
	}
	return table(w, []string{"REGION", "STATE", "NATS", "REDIS", "REPLICA", "CHILDREN", "ADDED"}, rows)
}

func channelTable(w io.Writer, cs []channelView) error {
	rows := make([][]string, len(cs))
	for i, c := range cs {
		rows[i] = []string{c.Origin, c.Dest, strconv.FormatBool(c.Paused), rate(c.OpsPerSec), rate(c.BytesPerSec)}
	}
	return table(w, []string{"ORIGIN", "DEST", "PAUSED", "OPS/S", "BYTES/S"}, rows)
}

func statusTable(w io.Writer, sts []manager.ChannelStatus) error {
	rows := make([][]string, len(sts))
	for i, s := range sts {
		controls := "-"
		var c []string
		if s.Paused {
			c = append(c, "paused")
		}
		if s.OpsPerSec > 0 {
			c = append(c, rate(s.OpsPerSec)+" ops/s")
		}
		if s.BytesPerSec > 0 {
			c = append(c, rate(s.BytesPerSec)+" B/s")
		}
		if len(c) > 0 {
			controls = strings.Join(c, ", ")
		}
		detail := s.LastError
		if detail == "" {
			detail = s.Reason
		}
		rows[i] = []string{
			s.Origin, s.Dest, s.State, strconv.FormatUint(s.AppliedSeq, 10), strconv.FormatUint(s.LagOps, 10),
			strconv.FormatFloat(s.LagSeconds, 'f', 1, 64), strconv.FormatFloat(s.ApplyRate, 'f', 0, 64), controls, orDash(detail),
		}
	}
	return table(w, []string{"ORIGIN", "DEST", "STATE", "APPLIED", "LAG-OPS", "LAG-S", "RATE", "CONTROLS", "ERROR/REASON"}, rows)
}
