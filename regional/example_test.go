package regional_test

import (
	"context"
	"log"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/globalreplica/globalreplica/regional"
)

// An application in fra that fails over to sgp when fra is down or lags
// more than half a second, and comes back 30 s after fra recovered.
func Example() {
	ctx := context.Background()
	c, err := regional.New(ctx, regional.Config{
		Regions: []regional.Region{
			{Name: "fra", Addr: "fra-child:6380", HTTP: "fra-child:9121"},
			{Name: "sgp", Addr: "sgp-child:6380", HTTP: "sgp-child:9121"},
		},
		Options:  &redis.Options{DialTimeout: time.Second, ReadTimeout: time.Second},
		MaxLag:   500 * time.Millisecond,
		HoldTime: 30 * time.Second,
		OnEvent:  func(e regional.Event) { log.Print(e) },
	})
	if err != nil {
		log.Fatal(err) // a bad config, or no region available
	}
	defer func() { _ = c.Close() }()
	if err := c.Incr(ctx, "visits").Err(); err != nil {
		log.Print(err) // ErrNoRegion while every region is away
	}
	log.Print("writing to ", c.Active())
}
