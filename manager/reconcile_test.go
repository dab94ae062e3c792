package manager

import (
	"reflect"
	"testing"
)

func testState() State {
	st := NewState()
	st.Instance = &Instance{Name: "shop"}
	for _, r := range []Region{
		{ID: "sgp", NATS: "nats://sgp"}, {ID: "fra", NATS: "nats://fra"},
		{ID: "iad", NATS: "nats://iad"}, {ID: "old", NATS: "nats://old", Evicted: true},
	} {
		st.Regions[r.ID] = r
	}
	for _, c := range []Channel{
		{Origin: "sgp", Dest: "fra", Paused: true},
		{Origin: "iad", Dest: "fra", OpsPerSec: 10, BytesPerSec: 1000},
		{Origin: "old", Dest: "fra"},  // origin evicted
		{Origin: "gone", Dest: "fra"}, // origin removed
		{Origin: "fra", Dest: "sgp"},  // outbound
	} {
		st.Channels[ChannelKey(c.Origin, c.Dest)] = c
	}
	return st
}

func TestDesiredInbound(t *testing.T) {
	full := map[string]Inbound{
		"sgp": {Origin: "sgp", NATS: "nats://sgp", Paused: true},
		"iad": {Origin: "iad", NATS: "nats://iad", OpsPerSec: 10, BytesPerSec: 1000},
	}
	noInstance := testState()
	noInstance.Instance = nil
	selfEvicted := testState()
	selfEvicted.Regions["fra"] = Region{ID: "fra", Evicted: true}
	tests := []struct {
		name string
		st   State
		self string
		want map[string]Inbound
	}{
		{"channels to self from live regions", testState(), "fra", full},
		{"outbound only", testState(), "sgp", map[string]Inbound{"fra": {Origin: "fra", NATS: "nats://fra"}}},
		{"no instance", noInstance, "fra", map[string]Inbound{}},
		{"self not a region", testState(), "lon", map[string]Inbound{}},
		{"self evicted", selfEvicted, "fra", map[string]Inbound{}},
		{"empty", NewState(), "fra", map[string]Inbound{}},
	}
	for _, tc := range tests {
		if got := DesiredInbound(tc.st, tc.self); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: got %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

func TestPlanInbound(t *testing.T) {
	sgp := Inbound{Origin: "sgp", NATS: "nats://sgp"}
	iad := Inbound{Origin: "iad", NATS: "nats://iad"}
	lon := Inbound{Origin: "lon", NATS: "nats://lon"}
	with := func(in Inbound, f func(*Inbound)) Inbound { f(&in); return in }
	set := func(ins ...Inbound) map[string]Inbound {
		m := map[string]Inbound{}
		for _, in := range ins {
			m[in.Origin] = in
		}
		return m
	}
	tests := []struct {
		name             string
		desired, running map[string]Inbound
		want             Plan
	}{
		{"nothing", set(), set(), Plan{}},
		{"steady", set(sgp, iad), set(sgp, iad), Plan{}},
		{"start all", set(sgp, iad), set(), Plan{Add: []Inbound{iad, sgp}}},
		{"stop all", set(), set(sgp, iad), Plan{Remove: []string{"iad", "sgp"}}},
		{"add and remove", set(sgp, lon), set(sgp, iad), Plan{Remove: []string{"iad"}, Add: []Inbound{lon}}},
		{"pause", set(with(sgp, func(i *Inbound) { i.Paused = true })), set(sgp), Plan{Control: []Inbound{with(sgp, func(i *Inbound) { i.Paused = true })}}},
		{"throttle", set(with(sgp, func(i *Inbound) { i.BytesPerSec = 5 })), set(sgp), Plan{Control: []Inbound{with(sgp, func(i *Inbound) { i.BytesPerSec = 5 })}}},
		{"nats moved", set(with(sgp, func(i *Inbound) { i.NATS = "nats://sgp2" })), set(sgp),
			Plan{Remove: []string{"sgp"}, Add: []Inbound{with(sgp, func(i *Inbound) { i.NATS = "nats://sgp2" })}}},
	}
	for _, tc := range tests {
		got := PlanInbound(tc.desired, tc.running)
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: got %+v, want %+v", tc.name, got, tc.want)
		}
		if got.Empty() != (len(tc.want.Add)+len(tc.want.Remove)+len(tc.want.Control) == 0) {
			t.Errorf("%s: Empty() = %v", tc.name, got.Empty())
		}
	}
}
