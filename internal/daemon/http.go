package daemon

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/globalreplica/globalreplica/channel"
)

// routes serves:
//
//	GET  /metrics                       Prometheus metrics
//	GET  /livez, /healthz               liveness: the process serves HTTP
//	GET  /readyz                        readiness: Redis reachable, region ready for writes
//	GET  /availability?max_lag=100ms&max_lag_ops=N&strict=B   serves writes and
//	                                    inbound channels within the lag tolerance (avail.go)
//	GET  /channels                      status of every inbound channel (JSON)
//	POST /channels/{origin}/pause       stop applying the channel origin -> here
//	POST /channels/{origin}/resume      apply again from where it stopped
//	POST /channels/{origin}/throttle?ops=N&bytes=M   limit the apply rate (0: none)
func (d *Daemon) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.registry, promhttp.HandlerOpts{Registry: d.registry}))
	live := func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "region": d.cfg.Region})
	}
	mux.HandleFunc("GET /livez", live)
	mux.HandleFunc("GET /healthz", live)
	mux.HandleFunc("GET /readyz", d.handleReadyz)
	mux.HandleFunc("GET /availability", d.handleAvailability)
	mux.HandleFunc("GET /channels", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, d.Statuses())
	})
	mux.HandleFunc("POST /channels/{origin}/{action}", func(w http.ResponseWriter, r *http.Request) {
		var recv *channel.Receiver
		ok := d.Node != nil
		if ok {
			recv, ok = d.Node.Receiver(r.PathValue("origin"))
		}
		if !ok {
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no channel from " + r.PathValue("origin") + " to " + d.cfg.Region})
			return
		}
		switch r.PathValue("action") {
		case "pause":
			recv.Pause()
		case "resume":
			recv.Resume()
		case "throttle":
			ops, err1 := parseRate(r.URL.Query().Get("ops"))
			bytes, err2 := parseRate(r.URL.Query().Get("bytes"))
			if err1 != nil || err2 != nil {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": "ops and bytes must be numbers >= 0"})
				return
			}
			recv.SetThrottle(ops, bytes)
		default:
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "unknown action " + r.PathValue("action") + " (pause, resume, throttle)"})
			return
		}
		writeJSON(w, http.StatusOK, recv.Status())
	})
	return mux
}

func parseRate(s string) (float64, error) {
	if s == "" {
		return 0, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 {
		return 0, strconv.ErrSyntax
	}
	return f, nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
