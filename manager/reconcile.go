package manager

import "sort"

// Inbound is a channel that a child of the destination region runs: it
// applies the ops of Origin, read from Origin's stream on the NATS at
// NATS, with the channel's controls.
type Inbound struct {
	Origin      string  `json:"origin"`
	NATS        string  `json:"nats"`
	Paused      bool    `json:"paused"`
	OpsPerSec   float64 `json:"ops_per_sec"`
	BytesPerSec float64 `json:"bytes_per_sec"`
}

// sameControls reports whether two specs of one channel have the same
// pause and throttle.
func (in Inbound) sameControls(o Inbound) bool {
	return in.Paused == o.Paused && in.OpsPerSec == o.OpsPerSec && in.BytesPerSec == o.BytesPerSec
}

// DesiredInbound returns, by origin, the channels that the children of
// region self must run in the desired state st: every channel origin →
// self whose origin region exists and is not evicted. There are none when
// the instance does not exist or self is not a region of it, or is
// evicted (an evicted region comes back only through a rebuild).
func DesiredInbound(st State, self string) map[string]Inbound {
	out := map[string]Inbound{}
	if st.Instance == nil {
		return out
	}
	if r, ok := st.Regions[self]; !ok || r.Evicted {
		return out
	}
	for _, c := range st.Channels {
		if c.Dest != self || c.Origin == self {
			continue
		}
		o, ok := st.Regions[c.Origin]
		if !ok || o.Evicted {
			continue
		}
		out[c.Origin] = Inbound{Origin: c.Origin, NATS: o.NATS, Paused: c.Paused, OpsPerSec: c.OpsPerSec, BytesPerSec: c.BytesPerSec}
	}
	return out
}

// Plan is what a child changes to go from the channels it runs to the
// desired ones. Apply Remove first, then Add, then Control.
type Plan struct {
	// Remove: origins whose receiver stops (channel deleted, origin
	// removed or evicted, or the origin's NATS moved: then it is in Add
	// too, to reconnect).
	Remove []string `json:"remove,omitempty"`
	// Add: receivers to start, with their controls.
	Add []Inbound `json:"add,omitempty"`
	// Control: running receivers whose pause or throttle changed.
	Control []Inbound `json:"control,omitempty"`
}

// Empty reports whether there is nothing to change.
func (p Plan) Empty() bool { return len(p.Remove) == 0 && len(p.Add) == 0 && len(p.Control) == 0 }

// PlanInbound compares the desired channels with the running ones (both
// by origin) and returns the changes, each list sorted by origin.
func PlanInbound(desired, running map[string]Inbound) Plan {
	var p Plan
	for origin, run := range running {
		want, ok := desired[origin]
		if !ok || want.NATS != run.NATS {
			p.Remove = append(p.Remove, origin)
		}
	}
	for origin, want := range desired {
		run, ok := running[origin]
		switch {
		case !ok || run.NATS != want.NATS:
			p.Add = append(p.Add, want)
		case !run.sameControls(want):
			p.Control = append(p.Control, want)
		}
	}
	sort.Strings(p.Remove)
	sort.Slice(p.Add, func(i, j int) bool { return p.Add[i].Origin < p.Add[j].Origin })
	sort.Slice(p.Control, func(i, j int) bool { return p.Control[i].Origin < p.Control[j].Origin })
	return p
}
