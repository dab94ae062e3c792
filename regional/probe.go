package regional

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// availability is what the client reads of GET /availability (the child's
// internal/daemon.Availability).
type availability struct {
	Region    string `json:"region"`
	Available bool   `json:"available"`
	Reason    string `json:"reason"`
	Lagging   []struct {
		Origin     string  `json:"origin"`
		LagOps     uint64  `json:"lag_ops"`
		LagSeconds float64 `json:"lag_seconds"`
		Reason     string  `json:"reason"`
	} `json:"lagging"`
	Error string `json:"error"` // of a 400
}

// probeHTTP asks a region's availability endpoint.
func (c *Client) probeHTTP(ctx context.Context, r *region) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.probeURL, nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("availability: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	var a availability
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("availability: %s: %w", r.probeURL, err)
	}
	if err := json.Unmarshal(body, &a); err != nil {
		return fmt.Errorf("availability: %s answered %s, not the JSON of a Global Replica child", r.probeURL, resp.Status)
	}
	if a.Region != "" && a.Region != r.Name {
		return fmt.Errorf("%w: %s serves region %s, configured as %s", ErrWrongRegion, r.HTTP, a.Region, r.Name)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return nil
	case http.StatusServiceUnavailable:
		why := []string{a.Reason}
		for _, l := range a.Lagging {
			why = append(why, fmt.Sprintf("from %s: %s", l.Origin, l.Reason))
		}
		return errors.New(strings.Join(why, "; "))
	case http.StatusBadRequest:
		return fmt.Errorf("availability: %s refused the probe: %s", r.probeURL, a.Error)
	}
	return fmt.Errorf("availability: %s answered %s", r.probeURL, resp.Status)
}
