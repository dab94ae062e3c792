package child

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"net"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Connection and server commands: PING, ECHO, HELLO, AUTH, QUIT, RESET,
// SELECT, CLIENT, COMMAND, INFO, ROLE, TIME.

func init() {
	connFlags := []string{FlagNoScript, FlagLoading, FlagStale, FlagFast, FlagNoAuth, FlagAllowBusy}
	register(
		Command{Name: "ping", Arity: -1, Flags: []string{FlagFast}, Group: GroupConnection,
			Summary: "Returns the server's liveliness response", Handler: cmdPing},
		Command{Name: "echo", Arity: 2, Flags: []string{FlagFast}, Group: GroupConnection,
			Summary: "Returns the given string", Handler: cmdEcho},
		Command{Name: "hello", Arity: -1, Flags: connFlags, Group: GroupConnection,
			Summary: "Handshakes with the server (RESP2 only: HELLO 3 answers NOPROTO)", Handler: cmdHello},
		Command{Name: "auth", Arity: -2, Flags: connFlags, Group: GroupConnection,
			Summary: "Authenticates the connection (user \"default\")", Handler: cmdAuth},
		Command{Name: "quit", Arity: -1, Flags: connFlags, Group: GroupConnection,
			Summary: "Closes the connection", Handler: cmdQuit},
		Command{Name: "reset", Arity: 1, Flags: []string{FlagNoScript, FlagLoading, FlagStale, FlagFast, FlagNoAuth, FlagAllowBusy},
			Group: GroupConnection, Summary: "Resets the connection (name, authentication)", Handler: cmdReset},
		Command{Name: "select", Arity: 2, Flags: []string{FlagLoading, FlagStale, FlagFast}, Group: GroupConnection,
			Summary: "Selects database 0, the only database of a global instance", Handler: cmdSelect},
		Command{Name: "client", Arity: -2, Group: GroupConnection, Summary: "A container for client connection commands",
			Subcommands: []Command{
				{Name: "id", Arity: 2, Flags: []string{FlagNoScript, FlagLoading, FlagStale}, Summary: "Returns the unique client ID of the connection", Handler: cmdClientID},
				{Name: "getname", Arity: 2, Flags: []string{FlagNoScript, FlagLoading, FlagStale}, Summary: "Returns the name of the connection", Handler: cmdClientGetName},
				{Name: "setname", Arity: 3, Flags: []string{FlagNoScript, FlagLoading, FlagStale}, Summary: "Sets the connection name", Handler: cmdClientSetName},
				{Name: "setinfo", Arity: 4, Flags: []string{FlagNoScript, FlagLoading, FlagStale}, Summary: "Sets information specific to the client library (lib-name, lib-ver)", Handler: cmdClientSetInfo},
				{Name: "info", Arity: 2, Flags: []string{FlagNoScript, FlagLoading, FlagStale}, Summary: "Returns information about the connection", Handler: cmdClientInfo},
				{Name: "list", Arity: -2, Flags: []string{FlagAdmin, FlagNoScript, FlagLoading, FlagStale}, Summary: "Lists the open connections [TYPE normal] [ID id ...]", Handler: cmdClientList},
				{Name: "help", Arity: 2, Flags: []string{FlagLoading, FlagStale}, Summary: "Returns helpful text about the subcommands", Handler: cmdClientHelp},
			}},
		Command{Name: "command", Arity: -1, Flags: []string{FlagLoading, FlagStale}, Group: GroupServer,
			Summary: "Returns detailed information about all commands", Handler: cmdCommand,
			Subcommands: []Command{
				{Name: "count", Arity: 2, Flags: []string{FlagLoading, FlagStale}, Summary: "Returns a count of commands", Handler: cmdCommandCount},
				{Name: "info", Arity: -2, Flags: []string{FlagLoading, FlagStale}, Summary: "Returns information about one, multiple or all commands", Handler: cmdCommandInfo},
				{Name: "docs", Arity: -2, Flags: []string{FlagLoading, FlagStale}, Summary: "Returns documentary information about one, multiple or all commands", Handler: cmdCommandDocs},
				{Name: "list", Arity: -2, Flags: []string{FlagLoading, FlagStale}, Summary: "Returns a list of command names [FILTERBY MODULE|ACLCAT|PATTERN x]", Handler: cmdCommandList},
				{Name: "getkeys", Arity: -3, Flags: []string{FlagLoading, FlagStale}, Summary: "Extracts the key names from an arbitrary command", Handler: cmdCommandGetKeys},
				{Name: "help", Arity: 2, Flags: []string{FlagLoading, FlagStale}, Summary: "Returns helpful text about the subcommands", Handler: cmdCommandHelp},
			}},
		Command{Name: "info", Arity: -1, Flags: []string{FlagLoading, FlagStale}, Group: GroupServer,
			Summary: "Returns information and statistics about the server [section ...]", Handler: cmdInfo},
		Command{Name: "role", Arity: 1, Flags: []string{FlagNoScript, FlagLoading, FlagStale, FlagFast}, Group: GroupServer,
			Summary: "Returns the replication role (always master: every region is writable)", Handler: cmdRole},
		Command{Name: "time", Arity: 1, Flags: []string{FlagLoading, FlagStale, FlagFast}, Group: GroupServer,
			Summary: "Returns the server time", Handler: cmdTime},
	)
}

func cmdPing(c *Call) {
	switch len(c.Args) {
	case 1:
		c.WriteStatus("PONG")
	case 2:
		c.WriteBulk(c.Args[1])
	default:
		c.WriteErrorString(arityError(c.Cmd))
	}
}

func cmdEcho(c *Call) { c.WriteBulk(c.Args[1]) }

// Authentication errors, in Redis's words.
const (
	errWrongPass   = "WRONGPASS invalid username-password pair or user is disabled."
	errAuthNoPass  = "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"
	errHelloNoAuth = "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time"
	errClientName  = "ERR Client names cannot contain spaces, newlines or special characters."
)

// checkPassword reports whether user and password open the connection.
// There is one user, "default"; with no password configured it takes any
// password, as Redis's nopass default user does.
func (s *Server) checkPassword(user, password []byte) bool {
	if string(user) != "default" {
		return false
	}
	if s.cfg.Password == "" {
		return true
	}
	a := sha256.Sum256(password)
	b := sha256.Sum256([]byte(s.cfg.Password))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

func cmdAuth(c *Call) {
	var user, pass []byte
	switch len(c.Args) {
	case 2:
		if c.srv.cfg.Password == "" {
			c.WriteErrorString(errAuthNoPass)
			return
		}
		user, pass = []byte("default"), c.Args[1]
	case 3:
		user, pass = c.Args[1], c.Args[2]
	default:
		c.WriteError(ErrSyntax)
		return
	}
	if !c.srv.checkPassword(user, pass) {
		c.srv.log.Info().Int64(logKeyConn, c.conn.id).Str(logKeyAddr, c.conn.addr).Msg("authentication failed")
		c.WriteErrorString(errWrongPass)
		return
	}
	c.conn.authenticated = true
	c.WriteOK()
}

// cmdHello answers HELLO [protover [AUTH user pass] [SETNAME name]]. Only
// RESP2 is spoken: HELLO 3 answers NOPROTO, which clients that try RESP3
// first (go-redis v9) take as the signal to stay on RESP2.
func cmdHello(c *Call) {
	next := 1
	if len(c.Args) >= 2 {
		ver, err := ParseInt(c.Args[1])
		if err != nil {
			c.WriteErrorString("ERR Protocol version is not an integer or out of range")
			return
		}
		if ver != 2 {
			c.WriteErrorString("NOPROTO unsupported protocol version")
			return
		}
		next = 2
	}
	var user, pass, name []byte
	setName := false
	for j := next; j < len(c.Args); j++ {
		more := len(c.Args) - 1 - j
		opt := c.Args[j]
		switch {
		case bytes.EqualFold(opt, []byte("auth")) && more >= 2:
			user, pass = c.Args[j+1], c.Args[j+2]
			j += 2
		case bytes.EqualFold(opt, []byte("setname")) && more >= 1:
			name = c.Args[j+1]
			if !validClientName(name) {
				c.WriteErrorString(errClientName)
				return
			}
			setName = true
			j++
		default:
			c.WriteErrorString("ERR Syntax error in HELLO option '" + truncate(opt, 128) + "'")
			return
		}
	}
	if user != nil {
		if !c.srv.checkPassword(user, pass) {
			c.WriteErrorString(errWrongPass)
			return
		}
		c.conn.authenticated = true
	}
	if !c.conn.authenticated {
		c.WriteErrorString(errHelloNoAuth)
		return
	}
	if setName {
		c.conn.setName(string(name))
	}
	c.WriteArray(14)
	c.WriteBulkString("server")
	c.WriteBulkString("redis")
	c.WriteBulkString("version")
	c.WriteBulkString(RedisVersion)
	c.WriteBulkString("proto")
	c.WriteInt(2)
	c.WriteBulkString("id")
	c.WriteInt(c.conn.id)
	c.WriteBulkString("mode")
	c.WriteBulkString("standalone")
	c.WriteBulkString("role")
	c.WriteBulkString("master")
	c.WriteBulkString("modules")
	c.WriteArray(0)
}

func cmdQuit(c *Call) {
	c.WriteOK()
	c.quit = true
}

func cmdReset(c *Call) {
	c.conn.setName("")
	c.conn.authenticated = c.srv.cfg.Password == ""
	c.WriteStatus("RESET")
}

func cmdSelect(c *Call) {
	db, err := ParseInt(c.Args[1])
	switch {
	case err != nil || db < -1<<31 || db > 1<<31-1:
		c.WriteError(ErrNotInteger)
	case db != 0:
		c.WriteErrorString("ERR SELECT is not supported in active-active mode: " + reasonOneDB)
	default:
		c.WriteOK()
	}
}

// validClientName is Redis's rule: printable ASCII without spaces.
func validClientName(name []byte) bool {
	for _, b := range name {
		if b < '!' || b > '~' {
			return false
		}
	}
	return true
}

func cmdClientID(c *Call) { c.WriteInt(c.conn.id) }

func cmdClientGetName(c *Call) {
	if name := c.conn.getName(); name != "" {
		c.WriteBulkString(name)
		return
	}
	c.WriteNull()
}

func cmdClientSetName(c *Call) {
	if !validClientName(c.Args[2]) {
		c.WriteErrorString(errClientName)
		return
	}
	c.conn.setName(string(c.Args[2]))
	c.WriteOK()
}

func cmdClientSetInfo(c *Call) {
	attr, val := c.Args[2], c.Args[3]
	cn := c.conn
	var dst *string
	switch {
	case bytes.EqualFold(attr, []byte("lib-name")):
		dst = &cn.libName
	case bytes.EqualFold(attr, []byte("lib-ver")):
		dst = &cn.libVer
	default:
		c.WriteErrorString("ERR Unrecognized option '" + truncate(attr, 128) + "'")
		return
	}
	if !validClientName(val) {
		c.WriteErrorString("ERR " + truncate(attr, 128) + " cannot contain spaces, newlines or special characters.")
		return
	}
	cn.mu.Lock()
	*dst = string(val)
	cn.mu.Unlock()
	c.WriteOK()
}

func cmdClientInfo(c *Call) { c.WriteBulkString(c.conn.infoLine(time.Now())) }

func cmdClientList(c *Call) {
	var ids map[int64]bool
	args := c.Args[2:]
	switch {
	case len(args) == 0:
	case len(args) == 2 && bytes.EqualFold(args[0], []byte("type")):
		switch strings.ToLower(string(args[1])) {
		case "normal":
		case "master", "replica", "slave", "pubsub":
			c.WriteBulkString("") // no such clients
			return
		default:
			c.WriteErrorString("ERR Unknown client type '" + truncate(args[1], 128) + "'")
			return
		}
	case len(args) >= 2 && bytes.EqualFold(args[0], []byte("id")):
		ids = map[int64]bool{}
		for _, a := range args[1:] {
			id, err := ParseInt(a)
			if err != nil || id <= 0 {
				c.WriteErrorString("ERR Invalid client ID")
				return
			}
			ids[id] = true
		}
	default:
		c.WriteError(ErrSyntax)
		return
	}
	conns := c.srv.clients()
	now := time.Now()
	var b strings.Builder
	for _, cn := range conns {
		if ids != nil && !ids[cn.id] {
			continue
		}
		b.WriteString(cn.infoLine(now))
	}
	c.WriteBulkString(b.String())
}

// clients returns the open connections by id.
func (s *Server) clients() []*clientConn {
	s.mu.Lock()
	out := make([]*clientConn, 0, len(s.conns))
	for _, cn := range s.conns {
		out = append(out, cn)
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

func cmdClientHelp(c *Call) {
	writeHelp(c, "CLIENT", c.srv.commandByName("client"))
}

func cmdCommandHelp(c *Call) {
	writeHelp(c, "COMMAND", c.srv.commandByName("command"))
}

func (s *Server) commandByName(name string) *Command { return commandTable[name] }

// writeHelp writes Redis's HELP format from the subcommand table.
func writeHelp(c *Call, name string, cmd *Command) {
	lines := []string{name + " <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"}
	for i := range cmd.Subcommands {
		s := &cmd.Subcommands[i]
		lines = append(lines, s.upper, "    "+s.Summary+".")
	}
	c.WriteArray(len(lines))
	for _, l := range lines {
		c.WriteStatus(l)
	}
}

func cmdCommand(c *Call) { c.w.WriteRaw(commandCache.get(false)) }

func cmdCommandCount(c *Call) { c.WriteInt(int64(len(supportedCommands()))) }

// lookupSupported finds a command that runs (not a refused one), or a
// subcommand by its full name ("client|setname").
func lookupSupported(name []byte) *Command {
	parent, sub, isSub := bytes.Cut(name, []byte("|"))
	cmd := lookupCommand(parent)
	if cmd == nil || cmd.Refused != "" {
		return nil
	}
	if isSub {
		return lookupIn(cmd.subs, sub)
	}
	return cmd
}

func cmdCommandInfo(c *Call) {
	if len(c.Args) == 2 {
		cmdCommand(c)
		return
	}
	var w respBuf
	w.array(len(c.Args) - 2)
	for _, name := range c.Args[2:] {
		if cmd := lookupSupported(name); cmd != nil {
			appendCommandInfo(&w, cmd)
		} else {
			w.b = append(w.b, "$-1\r\n"...)
		}
	}
	c.w.WriteRaw(w.b)
}

func cmdCommandDocs(c *Call) {
	if len(c.Args) == 2 {
		c.w.WriteRaw(commandCache.get(true))
		return
	}
	var found []*Command
	for _, name := range c.Args[2:] {
		if cmd := lookupSupported(name); cmd != nil {
			found = append(found, cmd)
		}
	}
	var w respBuf
	w.array(2 * len(found))
	for _, cmd := range found {
		w.bulk(cmd.fullName)
		appendCommandDocs(&w, cmd)
	}
	c.w.WriteRaw(w.b)
}

func cmdCommandList(c *Call) {
	filter, arg := "", ""
	switch {
	case len(c.Args) == 2:
	case len(c.Args) == 5 && bytes.EqualFold(c.Args[2], []byte("filterby")):
		filter = strings.ToLower(string(c.Args[3]))
		arg = string(c.Args[4])
		if filter != "module" && filter != "aclcat" && filter != "pattern" {
			c.WriteError(ErrSyntax)
			return
		}
	default:
		c.WriteError(ErrSyntax)
		return
	}
	var names []string
	for _, cmd := range supportedCommands() {
		if commandListMatches(cmd, filter, arg) {
			names = append(names, cmd.fullName)
		}
		for i := range cmd.Subcommands {
			if s := &cmd.Subcommands[i]; commandListMatches(s, filter, arg) {
				names = append(names, s.fullName)
			}
		}
	}
	c.WriteBulkStrings(names)
}

func cmdCommandGetKeys(c *Call) {
	args := c.Args[2:]
	cmd := lookupCommand(args[0])
	if cmd != nil && cmd.subs != nil && len(args) > 1 {
		if sub := lookupIn(cmd.subs, args[1]); sub != nil {
			cmd = sub
		}
	}
	switch {
	case cmd == nil || cmd.Refused != "":
		c.WriteErrorString("ERR Invalid command specified")
	case cmd.FirstKey == 0:
		c.WriteErrorString("ERR The command has no key arguments")
	case !arityOK(cmd.Arity, len(args)):
		c.WriteErrorString("ERR Invalid number of arguments specified for command")
	default:
		keys := commandKeys(cmd, args)
		c.WriteArray(len(keys))
		for _, k := range keys {
			c.WriteBulk(k)
		}
	}
}

func cmdRole(c *Call) {
	c.WriteArray(3)
	c.WriteBulkString("master")
	c.WriteInt(0)
	c.WriteArray(0)
}

func cmdTime(c *Call) {
	now := time.Now()
	c.WriteArray(2)
	c.WriteBulkString(strconv.FormatInt(now.Unix(), 10))
	c.WriteBulkString(strconv.FormatInt(int64(now.Nanosecond()/1000), 10))
}

// InfoSection is one "# Name" block of INFO. Name is printed as given and
// matched case-insensitively against the sections a client asks for.
type InfoSection struct {
	Name   string
	Fields []InfoField
}

// InfoField is one "key:value" line of an INFO section.
type InfoField struct {
	Key, Value string
}

// infoProvider is an optional interface of the engine: sections it adds to
// INFO, such as "Keyspace" (db0:keys=N,expires=M,avg_ttl=0) and
// "ActiveActive". A section named like one of the server's own (Server,
// Clients, Stats, Replication) is ignored; "Keyspace" replaces the server's
// empty one. An error fails INFO with it, unless only the server's own
// sections were asked for.
type infoProvider interface {
	InfoSections(ctx context.Context) ([]InfoSection, error)
}

// ownInfoSections are the sections the server renders itself, in order.
var ownInfoSections = []string{"server", "clients", "stats", "replication"}

func cmdInfo(c *Call) {
	want := map[string]bool{}
	all := len(c.Args) == 1
	for _, a := range c.Args[1:] {
		switch s := strings.ToLower(string(a)); s {
		case "default", "all", "everything":
			all = true
		default:
			want[s] = true
		}
	}
	needEngine := all
	for s := range want {
		if !isOwnInfoSection(s) {
			needEngine = true
		}
	}
	sections := c.srv.ownInfo()
	keyspace := InfoSection{Name: "Keyspace"}
	if p := c.srv.info; p != nil && needEngine {
		extra, err := p.InfoSections(c.Ctx)
		if err != nil {
			c.WriteError(err)
			return
		}
		for _, sec := range extra {
			name := strings.ToLower(sec.Name)
			switch {
			case name == "keyspace":
				keyspace = sec
			case isOwnInfoSection(name):
			default:
				sections = append(sections, sec)
			}
		}
	}
	sections = append(sections, keyspace)
	var b strings.Builder
	for _, sec := range sections {
		if !all && !want[strings.ToLower(sec.Name)] {
			continue
		}
		if b.Len() > 0 {
			b.WriteString("\r\n")
		}
		b.WriteString("# " + sec.Name + "\r\n")
		for _, f := range sec.Fields {
			b.WriteString(f.Key + ":" + f.Value + "\r\n")
		}
	}
	c.WriteBulkString(b.String())
}

func isOwnInfoSection(name string) bool {
	for _, s := range ownInfoSections {
		if s == name {
			return true
		}
	}
	return false
}

// ownInfo renders the server's own INFO sections.
func (s *Server) ownInfo() []InfoSection {
	now := time.Now()
	up := now.Sub(s.started)
	port := ""
	if a := s.Addr(); a != nil {
		if _, p, err := net.SplitHostPort(a.String()); err == nil {
			port = p
		}
	}
	exe, _ := os.Executable()
	i := func(n int64) string { return strconv.FormatInt(n, 10) }
	st := &s.stats
	return []InfoSection{
		{Name: "Server", Fields: []InfoField{
			{"redis_version", RedisVersion},
			{"redis_mode", "standalone"},
			{"globalreplica_version", Version},
			{"os", runtime.GOOS + " " + runtime.GOARCH},
			{"arch_bits", strconv.Itoa(strconv.IntSize)},
			{"go_version", runtime.Version()},
			{"process_id", strconv.Itoa(os.Getpid())},
			{"run_id", s.runID},
			{"tcp_port", port},
			{"server_time_usec", i(now.UnixMicro())},
			{"uptime_in_seconds", i(int64(up / time.Second))},
			{"uptime_in_days", i(int64(up / (24 * time.Hour)))},
			{"executable", exe},
			{"config_file", ""},
		}},
		{Name: "Clients", Fields: []InfoField{
			{"connected_clients", strconv.Itoa(s.connCount())},
			{"maxclients", strconv.Itoa(s.cfg.MaxClients)},
			{"blocked_clients", "0"},
			{"tracking_clients", "0"},
		}},
		{Name: "Stats", Fields: []InfoField{
			{"total_connections_received", i(st.connectionsReceived.Load())},
			{"total_commands_processed", i(st.commandsProcessed.Load())},
			{"total_net_input_bytes", i(st.netInput.Load())},
			{"total_net_output_bytes", i(st.netOutput.Load())},
			{"rejected_connections", i(st.rejectedConnections.Load())},
			{"total_error_replies", i(st.errorReplies.Load())},
			{"protocol_errors", i(st.protocolErrors.Load())},
			{"handler_panics", i(st.handlerPanics.Load())},
		}},
		{Name: "Replication", Fields: []InfoField{
			{"role", "master"},
			{"connected_slaves", "0"},
		}},
	}
}
