package main

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/globalreplica/globalreplica/child"
	"github.com/globalreplica/globalreplica/crdt"
	"github.com/globalreplica/globalreplica/manager"
)

func init() { register(newConflictsCommand) }

// conflictKinds are the kinds in the order tables show them.
var conflictKinds = []string{crdt.ConflictLWW, crdt.ConflictSetIncr, crdt.ConflictRemove, crdt.ConflictTTL, crdt.ConflictType}

// conflictsView is the JSON of conflicts.
type conflictsView struct {
	Conflicts   []conflictView              `json:"conflicts"` // newest first
	Counts      map[string]map[string]int64 `json:"counts"`    // region -> kind -> conflicts resolved since the region began
	Totals      map[string]int64            `json:"totals"`    // kind -> sum over regions
	Unreachable map[string]string           `json:"unreachable"`
	Skipped     []verifySkippedView         `json:"skipped"` // evicted regions, not asked
}

type conflictView struct {
	Region   string             `json:"region"` // the region that resolved it
	Time     time.Time          `json:"time"`
	Key      string             `json:"key"`
	Type     string             `json:"type"`
	Field    string             `json:"field"` // hash field or member; "" for a string or the key's TTL
	Kind     string             `json:"kind"`  // lww, set-incr, remove, ttl, type
	Op       string             `json:"op"`    // the remote op that met the conflict, origin:seq
	Regions  []string           `json:"regions"`
	Winner   string             `json:"winner"`
	Won      *conflictSideView  `json:"won"`  // lww: the write that shows; else null
	Lost     []conflictSideView `json:"lost"` // lww: the writes it won over
	Deadline *time.Time         `json:"deadline"`
	Why      string             `json:"why"`
}

type conflictSideView struct {
	Region string `json:"region"`
	HLC    string `json:"hlc"` // physical time and logical counter
	Value  string `json:"value"`
}

func newConflictView(c child.Conflict) conflictView {
	v := conflictView{
		Region: c.Region, Time: c.Time.UTC(), Key: c.Key, Type: c.Type, Field: c.Field, Kind: c.Kind, Op: c.Op,
		Regions: c.Regions, Winner: c.Winner, Lost: []conflictSideView{}, Why: c.Why,
	}
	if v.Regions == nil {
		v.Regions = []string{}
	}
	side := func(s child.ConflictSide) conflictSideView {
		return conflictSideView{Region: s.Region, HLC: time.UnixMilli(s.Ms).UTC().Format("2006-01-02T15:04:05.000Z") + "+" + strconv.FormatUint(uint64(s.Lc), 10), Value: s.Value}
	}
	if c.Won != nil {
		w := side(*c.Won)
		v.Won = &w
	}
	for _, l := range c.Lost {
		v.Lost = append(v.Lost, side(l))
	}
	if c.DeadlineMs > 0 {
		t := time.UnixMilli(c.DeadlineMs).UTC()
		v.Deadline = &t
	}
	return v
}

func newConflictsCommand(a *app) *cobra.Command {
	var (
		limit   int
		timeout time.Duration
		only    []string
	)
	cmd := &cobra.Command{
		Use:   "conflicts",
		Short: "Show the recent conflicts that CRDT rules resolved, and counts per kind",
		Long: `Show the conflicts that the CRDT rules resolved when the regions applied each
other's writes, newest first over all regions (at most --limit): the key, its
type, the regions whose writes met, which side won and why, and how many
conflicts of each kind every region resolved since it began.

Kinds: lww (concurrent writes of a value: the later HLC timestamp wins),
set-incr (a SET had not observed increments: they are added on top), remove
(a delete had not observed a write: the write survives), ttl (concurrent
TTLs: the longest wins, PERSIST beats any TTL), type (concurrent writes of
different types to one key). Each region keeps its last 1000 conflicts; a
conflict shows in every region that applied the op meeting it.

The children answer over their region's own NATS. A region that does not
answer is reported and the exit code is 1; the others are still shown.`,
		Example: "  channel-manager conflicts --limit 50\n  channel-manager conflicts --region fra --json",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 1 || limit > child.ConflictLogSize {
				return usageErr("--limit %d: 1 to %d", limit, child.ConflictLogSize)
			}
			if timeout <= 0 {
				return usageErr("--timeout %s: must be positive", timeout)
			}
			ctx := cmd.Context()
			s, err := a.store(ctx)
			if err != nil {
				return err
			}
			regions, skipped, err := activeRegions(ctx, s, only)
			if err != nil {
				return err
			}
			rep, rerr := manager.RecentConflicts(ctx, s.Instance(), regions, limit,
				manager.ControlOptions{Dial: a.regionDial, Timeout: timeout})
			if rerr != nil && !errors.Is(rerr, manager.ErrNoAnswer) {
				return rerr
			}
			v := conflictsView{Conflicts: []conflictView{}, Counts: rep.Counts, Totals: rep.Totals, Unreachable: rep.Unreachable, Skipped: skipped}
			for _, c := range rep.Conflicts {
				v.Conflicts = append(v.Conflicts, newConflictView(c))
			}
			if err := a.print(v, func(w io.Writer) error { return conflictsTable(w, v) }); err != nil {
				return err
			}
			if len(rep.Unreachable) > 0 {
				ids := make([]string, 0, len(rep.Unreachable))
				for id := range rep.Unreachable {
					ids = append(ids, id)
				}
				sort.Strings(ids)
				return fmt.Errorf("channel-manager: incomplete: region(s) %s did not answer: %w", strings.Join(ids, ", "), rerr)
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 20, "show at most this many recent conflicts (1-1000)")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "how long to wait for each region's answer")
	cmd.Flags().StringSliceVar(&only, "region", nil, "ask only these regions (repeat or comma-separate); default all that are not evicted")
	return cmd
}

func conflictsTable(w io.Writer, v conflictsView) error {
	rows := make([][]string, 0, len(v.Conflicts))
	for _, c := range v.Conflicts {
		key := c.Key
		if c.Field != "" {
			key += " [" + c.Field + "]"
		}
		rows = append(rows, []string{c.Time.Format("2006-01-02T15:04:05.000Z"), c.Region, key, c.Type, c.Kind, c.Op, orDash(c.Winner), c.Why})
	}
	if len(rows) == 0 {
		if _, err := fmt.Fprintln(w, "no recent conflicts"); err != nil {
			return err
		}
	} else if err := table(w, []string{"TIME", "REGION", "KEY", "TYPE", "KIND", "OP", "WINNER", "WHY"}, rows); err != nil {
		return err
	}
	// counts per region and kind
	regions := make([]string, 0, len(v.Counts))
	for r := range v.Counts {
		regions = append(regions, r)
	}
	sort.Strings(regions)
	header := []string{"REGION"}
	for _, k := range conflictKinds {
		header = append(header, strings.ToUpper(k))
	}
	header = append(header, "TOTAL")
	count := func(m map[string]int64) []string {
		var out []string
		var sum int64
		for _, k := range conflictKinds {
			out = append(out, strconv.FormatInt(m[k], 10))
		}
		for _, n := range m {
			sum += n
		}
		return append(out, strconv.FormatInt(sum, 10))
	}
	crows := make([][]string, 0, len(regions)+1)
	for _, r := range regions {
		crows = append(crows, append([]string{r}, count(v.Counts[r])...))
	}
	crows = append(crows, append([]string{"all"}, count(v.Totals)...))
	if _, err := fmt.Fprintln(w); err != nil {
		return err
	}
	if err := table(w, header, crows); err != nil {
		return err
	}
	for _, s := range v.Skipped {
		if _, err := fmt.Fprintf(w, "skipped %s: %s\n", s.Region, s.Reason); err != nil {
			return err
		}
	}
	ids := make([]string, 0, len(v.Unreachable))
	for id := range v.Unreachable {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		if _, err := fmt.Fprintf(w, "unreachable %s: %s\n", id, v.Unreachable[id]); err != nil {
			return err
		}
	}
	return nil
}
