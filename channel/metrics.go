package channel

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the Prometheus metrics of a region's shipper and receivers.
// Create one per process with NewMetrics and share it.
type Metrics struct {
	shipped     *prometheus.CounterVec
	backlog     *prometheus.GaugeVec
	shippedSeq  *prometheus.GaugeVec
	shipErrors  *prometheus.CounterVec
	applied     *prometheus.CounterVec
	appliedSeq  *prometheus.GaugeVec
	lagOps      *prometheus.GaugeVec
	lagSeconds  *prometheus.GaugeVec
	state       *prometheus.GaugeVec
	recvErrors  *prometheus.CounterVec
	conflicts   *prometheus.CounterVec
	throttleOps *prometheus.GaugeVec
}

// The channel states.
const (
	StateStarting     = "starting"
	StateRunning      = "running"
	StatePaused       = "paused"
	StateError        = "error"
	StateNeedsRebuild = "needs-rebuild"
	StateStopped      = "stopped"
)

var allStates = []string{StateStarting, StateRunning, StatePaused, StateError, StateNeedsRebuild, StateStopped}

// NewMetrics registers the metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	ch := []string{"origin", "dest"}
	m := &Metrics{
		shipped:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gr_shipper_shipped_ops_total", Help: "Local ops published to the region's stream."}, []string{"region"}),
		backlog:     prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "gr_oplog_backlog_ops", Help: "Local ops in the op log not yet acknowledged by JetStream."}, []string{"region"}),
		shippedSeq:  prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "gr_shipper_last_seq", Help: "Sequence number of the last op acknowledged by JetStream."}, []string{"region"}),
		shipErrors:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gr_shipper_errors_total", Help: "Shipping errors."}, []string{"region"}),
		applied:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gr_channel_applied_ops_total", Help: "Remote ops applied."}, ch),
		appliedSeq:  prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "gr_channel_applied_seq", Help: "The origin's last applied sequence number."}, ch),
		lagOps:      prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "gr_channel_lag_ops", Help: "Ops in the origin's stream not yet applied."}, ch),
		lagSeconds:  prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "gr_channel_lag_seconds", Help: "Age of the last applied op while ops are pending, else 0."}, ch),
		state:       prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "gr_channel_state", Help: "1 for the channel's current state."}, []string{"origin", "dest", "state"}),
		recvErrors:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gr_channel_errors_total", Help: "Receive and apply errors."}, ch),
		conflicts:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gr_conflicts_resolved_total", Help: "Concurrent writes resolved by CRDT rules, by kind."}, []string{"region", "kind"}),
		throttleOps: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "gr_channel_throttle_ops_per_second", Help: "The channel's apply limit in ops/s (0: none)."}, ch),
	}
	reg.MustRegister(m.shipped, m.backlog, m.shippedSeq, m.shipErrors, m.applied, m.appliedSeq, m.lagOps,
		m.lagSeconds, m.state, m.recvErrors, m.conflicts, m.throttleOps)
	return m
}

func (m *Metrics) setState(origin, dest, state string) {
	if m == nil {
		return
	}
	for _, s := range allStates {
		v := 0.0
		if s == state {
			v = 1
		}
		m.state.WithLabelValues(origin, dest, s).Set(v)
	}
}
