package main

import (
	"fmt"
	"os"
	"os/signal"

	"github.com/globalreplica/globalreplica/internal/devredis"
)

func main() {
	s, err := devredis.Start(os.Args[1])
	if err != nil {
		panic(err)
	}
	fmt.Println(s.Addr())
	c := make(chan os.Signal, 1)
	signal.Notify(c, os.Interrupt)
	<-c
	s.Close()
}
