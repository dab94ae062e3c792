package manager

import (
	"context"
	"errors"
	"sort"

	"github.com/globalreplica/globalreplica/child"
)

// ConflictsReport is the recent conflicts of every region and the counts.
type ConflictsReport struct {
	// Conflicts are the most recent conflicts of all regions merged, newest
	// first, each with the region that resolved it, at most the limit.
	Conflicts []child.Conflict `json:"conflicts"`
	// Counts are the conflicts each region resolved since its state began,
	// by kind; Totals the sums over regions.
	Counts map[string]map[string]int64 `json:"counts"`
	Totals map[string]int64            `json:"totals"`
	// Unreachable lists the regions that did not answer, with the reason;
	// the rest of the report is theirs.
	Unreachable map[string]string `json:"unreachable"`
}

// RecentConflicts collects the recent conflicts (child.Conflict: key, type,
// regions, which side won and why) and the counts by kind of every region
// over the regions' NATS. Regions that do not answer are listed in
// Unreachable and the error (ErrNoAnswer) says so; the report holds what
// the others answered.
func RecentConflicts(ctx context.Context, instance string, regions []Region, limit int, o ControlOptions) (ConflictsReport, error) {
	rep := ConflictsReport{Counts: map[string]map[string]int64{}, Totals: map[string]int64{}, Unreachable: map[string]string{}}
	if limit <= 0 || limit > child.ConflictLogSize {
		limit = child.ConflictLogSize
	}
	rs, errs := ctlConnect(instance, regions, o)
	defer ctlClose(rs)
	replies := make([]*child.ConflictsReply, len(rs))
	rerrs := ctlEach(rs, func(i int, r *ctlRegion) error {
		var cr child.ConflictsReply
		if err := r.request(ctx, child.CtlConflicts, child.ConflictsRequest{N: limit}, &cr); err != nil {
			return err
		}
		replies[i] = &cr
		return nil
	})
	for i, r := range rs {
		if errs[i] == nil {
			errs[i] = rerrs[i]
		}
		if errs[i] != nil {
			rep.Unreachable[r.id] = errs[i].Error()
			continue
		}
		cr := replies[i]
		rep.Counts[r.id] = cr.Counts
		if rep.Counts[r.id] == nil {
			rep.Counts[r.id] = map[string]int64{}
		}
		for k, n := range cr.Counts {
			rep.Totals[k] += n
		}
		for _, c := range cr.Conflicts {
			c.Region = r.id
			rep.Conflicts = append(rep.Conflicts, c)
		}
	}
	sort.SliceStable(rep.Conflicts, func(i, j int) bool {
		a, b := rep.Conflicts[i], rep.Conflicts[j]
		if !a.Time.Equal(b.Time) {
			return a.Time.After(b.Time)
		}
		return a.Region < b.Region
	})
	if len(rep.Conflicts) > limit {
		rep.Conflicts = rep.Conflicts[:limit]
	}
	if rep.Conflicts == nil {
		rep.Conflicts = []child.Conflict{}
	}
	return rep, errors.Join(errs...)
}
