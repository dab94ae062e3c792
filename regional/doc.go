// Package regional is a failover-aware go-redis client for applications of
// a Global Replica instance. It owns the choice of region, not the
// replication: writes made in any region reach the others through the sync
// channels, so an application can switch regions without losing what it
// wrote.
//
// The client is configured with the regions in order of preference (own
// region first) and the conditions a region must meet: it serves writes,
// its inbound channels lag less than MaxLag / MaxLagOps, and it has not
// failed FailureThreshold times in a row. It probes every region each
// ProbeInterval (GET /availability on the child's HTTP endpoint, then a
// PING), sends commands to the most preferred region that meets the
// conditions, moves to the next one as soon as the active region is down,
// and fails back to a more preferred region once that one has met the
// conditions for HoldTime. Every change is reported to Config.OnEvent.
//
//	c, err := regional.New(ctx, regional.Config{
//		Regions: []regional.Region{
//			{Name: "fra", Addr: "fra-child:6380", HTTP: "fra-child:9121"},
//			{Name: "sgp", Addr: "sgp-child:6380", HTTP: "sgp-child:9121"},
//		},
//		MaxLag:  500 * time.Millisecond,
//		OnEvent: func(e regional.Event) { log.Print(e) },
//	})
//	if err != nil { ... }
//	defer c.Close()
//	err = c.Set(ctx, "k", "v", 0).Err() // to fra, or sgp while fra is away
//
// Client embeds a *redis.Client whose commands and pipelines are routed to
// the active region by a hook, so it has the full go-redis API and
// satisfies redis.UniversalClient. A command is sent to one region and is
// not retried elsewhere: after a network error the application does not
// know whether it was applied, and decides itself whether to retry (the
// next attempt goes to the region active then). While no region is
// available commands fail at once with ErrNoRegion.
package regional
