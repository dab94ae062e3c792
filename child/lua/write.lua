-- Entry point for local writes: FCALL gr_write 0 region command args...,
-- normalized and validated for syntax by the child. Each write of a key
-- becomes one op: it takes the next sequence number and an HLC reading,
-- merges into the key's state and is appended to the op log, all in this
-- one atomic function call. Mirrors the generators of crdt/gen.go.

-- per-call state (functions run one at a time; gr_write sets these first)
local region, wall, seq, cms, clc, logged, oplog
-- clean[key] is true when the key had no state in db 1 when the call
-- began (see str_fast); valid until a command takes the general path,
-- which may write db 1 (the fast paths never do)
local clean, clean_valid

-- builder ---------------------------------------------------------------------

local function begin(name, str_hint)
  clean_valid = false
  local K = load_key(name, wall, str_hint)
  local ms, lc = cms, clc
  if wall > ms then ms, lc = wall, 0 else lc = lc + 1 end
  local B = {K = K, seq = seq + 1, ms = ms, lc = lc, elems = {}, idx = {}, exp = nil}
  return B
end

local function elemop(B, t, fname)
  local k = t .. ':' .. fname
  local i = B.idx[k]
  if i then return B.elems[i] end
  local eo = {t, fname, {}, 0}
  B.elems[#B.elems + 1] = eo
  B.idx[k] = #B.elems
  return eo
end

local function b_remove(B, t, fname)
  local obs = observed(get_elem(B.K, t, fname))
  if #obs == 0 then return end
  local eo = elemop(B, t, fname)
  if #eo[3] == 0 then eo[3] = obs end
end

local function b_clear_ttl(B)
  if #B.K.x.e == 0 then return end
  B.exp = B.exp or {{}, 0}
  B.exp[1] = exp_observed(B.K.x)
end

local function b_set_ttl(B, d)
  b_clear_ttl(B)
  B.exp = B.exp or {{}, 0}
  B.exp[2] = d
end

local function b_remove_type(B, t)
  if has_state(B.K, t) then load_all(B.K, t) end
  for _, fname in ipairs(sorted_keys(B.K.elems[t])) do b_remove(B, t, fname) end
end

local function b_remove_all(B)
  b_remove(B, T_STR, '')
  for t = T_HASH, T_ZSET do b_remove_type(B, t) end
  b_clear_ttl(B)
end

local function b_set(B, t, fname, val)
  b_remove(B, t, fname)
  local eo = elemop(B, t, fname)
  eo[4] = 1
  eo[5] = val
end

local function b_incr(B, t, fname, di, df)
  local eo = elemop(B, t, fname)
  local start, i, f = B.seq, di, df
  local c = get_elem(B.K, t, fname).c[region]
  if c then
    local rs = 0
    for _, x in ipairs(eo[3]) do if x[1] == region then rs = x[2] end end
    if c[1] > rs then start, i, f = c[2], c[3] + di, c[4] + df end
  end
  eo[4] = 2
  eo[5], eo[6], eo[7] = start, i, f
end

local function new_builder(name, str_hint)
  local B = begin(name, str_hint)
  if expired(B.K) then b_remove_all(B) end
  return B
end

-- done logs the op and applies it to the key's state; false if no write
local function done(B)
  if #B.elems == 0 and not B.exp then return false end
  local K = B.K
  oplog[#oplog + 1] = mp_pack({VERSION, region, B.seq, B.ms, B.lc, K.name, B.elems, B.exp or {}})
  seq, cms, clc = B.seq, B.ms, B.lc
  logged = logged + 1
  for _, eo in ipairs(B.elems) do
    merge(get_elem(K, eo[1], eo[2]), region, B.seq, B.ms, B.lc, eo)
    K.dirty[eo[1]][eo[2]] = true
  end
  if B.exp then exp_merge(K.x, region, B.seq, B.exp) end
  save(K, B.exp ~= nil)
  return true
end

-- fast paths -------------------------------------------------------------------
-- A key with no state in db 1 at all (no expiry register, no tombstone, no
-- other type) is either absent or a live string without a deadline whose
-- whole state is its record in db 0 (docs/storage.md). SET and INCRBY on
-- such a key build the same op as the builder above and leave the same
-- state, reading and writing db 0 only after one EXISTS in db 1.

-- str_fast returns the string element of such a key and whether the key
-- exists, or nil when the key has state in db 1 (take the general path)
local function db1_empty(name)
  return rcall('EXISTS', 'x:' .. name, 'k:' .. name, 'h:' .. name, 's:' .. name, 'z:' .. name) == 0
end

local function str_fast(name)
  local c = clean_valid and clean[name]
  if c == nil then
    db(1)
    c = db1_empty(name)
  end
  if not c then return nil end
  db(0)
  local s = redis.pcall('GET', name)
  if s == false then return new_elem(), false end
  if type(s) ~= 'string' then return nil end
  return dec_elem(s), true
end

-- fast_done logs the op of one element op eo (of sequence number seq + 1)
-- on the string name and merges it into el, the key's live state
local function fast_done(name, el, eo)
  local ms, lc = cms, clc
  if wall > ms then ms, lc = wall, 0 else lc = lc + 1 end
  local s = seq + 1
  oplog[#oplog + 1] = mp_pack({VERSION, region, s, ms, lc, name, {eo}, {}})
  seq, cms, clc = s, ms, lc
  logged = logged + 1
  merge(el, region, s, ms, lc, eo)
  db(0)
  rcall('SET', name, enc_elem(el))
end

-- fast_set is do_set without options (b_set, no expiry to clear)
local function fast_set(name, val)
  local el = str_fast(name)
  if not el then return false end
  fast_done(name, el, {T_STR, '', observed(el), 1, val})
  return true
end

local function visible_as(K, t)
  local vt = vtype(K)
  if vt ~= 0 and vt ~= t then fail(E_WRONGTYPE) end
end

local function get_str(K)
  if vtype(K) ~= T_STR then return nil end
  return string_value(K.elems[T_STR][''])
end

-- int_value is a string's value as INCRBY reads it: 0 when there is none,
-- and an error for a value that is not an integer
local function int_value(v)
  if not v then return 0 end
  local kind, n = parse_num(v)
  if kind ~= 1 then
    if kind == 2 and is_canonical_int(v) then fail(E_OVERFLOW) end
    fail(E_NOTINT)
  end
  return n
end

local function check_int_add(cur, d)
  local r = cur + d
  if d > MAXSAFE or d < -MAXSAFE or r > MAXSAFE or r < -MAXSAFE then fail(E_OVERFLOW) end
end

local function bad_float(x) return x ~= x or x == math.huge or x == -math.huge end

-- commands --------------------------------------------------------------------

local C = {}

-- set key val nx xx get keepttl ttlmode(''|rel|abs) ttlms
local function do_set(name, val, nx, xx, get, keepttl, ttlmode, ttlms)
  if not (nx or xx or get or keepttl) and ttlmode == '' and fast_set(name, val) then return true, nil end
  local B = begin(name, true)
  local K = B.K
  if get then visible_as(K, T_STR) end
  local old = get_str(K)
  local exists = vtype(K) ~= 0
  if (nx and exists) or (xx and not exists) then return false, old end
  if ttlmode == 'abs' and ttlms <= wall then
    -- a deadline in the past: Redis writes and expires at once, a delete
    if exists then
      b_remove_all(B)
      done(B)
    end
    return true, old
  end
  if expired(K) then b_remove_all(B) end
  db(1)
  if rcall('EXISTS', 'h:' .. name, 's:' .. name, 'z:' .. name) > 0 then
    for t = T_HASH, T_ZSET do b_remove_type(B, t) end
  end
  b_set(B, T_STR, '', val)
  if ttlmode == 'rel' then
    b_set_ttl(B, wall + ttlms)
  elseif ttlmode == 'abs' then
    b_set_ttl(B, ttlms)
  elseif not keepttl then
    b_clear_ttl(B)
  end
  done(B)
  return true, old
end

C.set = function(a)
  local get = a[5] == '1'
  local written, old = do_set(a[1], a[2], a[3] == '1', a[4] == '1', get, a[6] == '1', a[7], tonumber(a[8] or '0'))
  if get then return old or false end
  if not written then return false end
  return {ok = 'OK'}
end

C.mset = function(a)
  for i = 1, #a, 2 do do_set(a[i], a[i + 1], false, false, false, false, '', 0) end
  return {ok = 'OK'}
end

-- fast_incrby is C.incrby on a key without state in db 1 (see str_fast);
-- nil when the key has some
local function fast_incrby(name, d)
  local el, exists = str_fast(name)
  if not el then return nil end
  local cur = 0
  if exists then cur = int_value(string_value(el)) end
  check_int_add(cur, d)
  -- b_incr: the op carries this region's counter run, extended
  local start, i, f = seq + 1, d, 0
  local c = el.c[region]
  if c then start, i, f = c[2], c[3] + d, c[4] + 0 end
  if i > MAXSAFE or i < -MAXSAFE then fail(E_OVERFLOW) end
  fast_done(name, el, {T_STR, '', {}, 2, start, i, f})
  return cur + d
end

C.incrby = function(a)
  local d = tonumber(a[2])
  local r = fast_incrby(a[1], d)
  if r then return r end
  local B = new_builder(a[1], true)
  visible_as(B.K, T_STR)
  local cur = int_value(get_str(B.K))
  check_int_add(cur, d)
  b_incr(B, T_STR, '', d, 0)
  local eo = elemop(B, T_STR, '')
  if eo[6] > MAXSAFE or eo[6] < -MAXSAFE then fail(E_OVERFLOW) end
  done(B)
  return cur + d
end

C.incrbyfloat = function(a)
  local d = tonumber(a[2])
  local B = new_builder(a[1], true)
  visible_as(B.K, T_STR)
  local cur = 0
  local v = get_str(B.K)
  if v then
    local kind, n = parse_num(v)
    if kind == 0 then fail(E_NOTFLOAT) end
    cur = n
  end
  if bad_float(cur + d) or bad_float(d) then fail(E_NAN) end
  b_incr(B, T_STR, '', 0, d)
  done(B)
  return string_value(B.K.elems[T_STR][''])
end

C.append = function(a)
  local K = load_key(a[1], wall, true)
  visible_as(K, T_STR)
  local old = get_str(K) or ''
  do_set(a[1], old .. a[2], false, false, false, true, '', 0)
  return #old + #a[2]
end

local function del1(name)
  local B = begin(name)
  if vtype(B.K) == 0 then return 0 end
  b_remove_all(B)
  done(B)
  return 1
end

C.del = function(a)
  local n = 0
  for _, name in ipairs(a) do n = n + del1(name) end
  return n
end

C.getdel = function(a)
  local K = load_key(a[1], wall, true)
  visible_as(K, T_STR)
  local old = get_str(K)
  if old then del1(a[1]) end
  return old or false
end

-- expire key mode(rel|abs) ms cond(''|nx|xx|gt|lt) -> 0/1
C.expire = function(a)
  local name, mode, ms, cond = a[1], a[2], tonumber(a[3]), a[4]
  local d = ms
  if mode == 'rel' then d = wall + ms end
  local K = load_key(name, wall)
  if vtype(K) == 0 then return 0 end
  local cur = deadline(K.x)
  if (cond == 'nx' and cur ~= 0) or (cond == 'xx' and cur == 0)
    or (cond == 'gt' and (cur == 0 or d <= cur)) or (cond == 'lt' and cur ~= 0 and d >= cur)
    or (cond == 'xxlt' and (cur == 0 or d >= cur)) then
    return 0
  end
  if d <= wall then return del1(name) end
  local B = new_builder(name)
  b_set_ttl(B, d)
  done(B)
  return 1
end

C.persist = function(a)
  local B = begin(a[1])
  if vtype(B.K) == 0 or deadline(B.K.x) == 0 then return 0 end
  b_set_ttl(B, PERSIST)
  done(B)
  return 1
end

-- hashes

C.hset = function(a)
  local B = new_builder(a[1])
  visible_as(B.K, T_HASH)
  local live_before = vtype(B.K) == T_HASH
  local added, seen = 0, {}
  for i = 2, #a, 2 do
    local f = a[i]
    if not seen[f] then
      seen[f] = true
      if not live_before or not live(get_elem(B.K, T_HASH, f)) then added = added + 1 end
    end
    b_set(B, T_HASH, f, a[i + 1])
  end
  done(B)
  return added
end

C.hsetnx = function(a)
  local K = load_key(a[1], wall)
  visible_as(K, T_HASH)
  if vtype(K) == T_HASH and live(get_elem(K, T_HASH, a[2])) then return 0 end
  C.hset(a)
  return 1
end

local function remove_members(t, a)
  local B = begin(a[1])
  visible_as(B.K, t)
  if vtype(B.K) ~= t then return 0 end
  local n, seen = 0, {}
  for i = 2, #a do
    local f = a[i]
    if not seen[f] and live(get_elem(B.K, t, f)) then
      seen[f] = true
      n = n + 1
      b_remove(B, t, f)
    end
  end
  if n > 0 then done(B) end
  return n
end

C.hdel = function(a) return remove_members(T_HASH, a) end

C.hincrby = function(a)
  local f, d = a[2], tonumber(a[3])
  local B = new_builder(a[1])
  visible_as(B.K, T_HASH)
  local cur = 0
  if vtype(B.K) == T_HASH then
    local v = string_value(get_elem(B.K, T_HASH, f))
    if v then
      local kind, n = parse_num(v)
      if kind ~= 1 then fail(E_HNOTINT) end
      cur = n
    end
  end
  check_int_add(cur, d)
  b_incr(B, T_HASH, f, d, 0)
  local eo = elemop(B, T_HASH, f)
  if eo[6] > MAXSAFE or eo[6] < -MAXSAFE then fail(E_OVERFLOW) end
  done(B)
  return cur + d
end

C.hincrbyfloat = function(a)
  local f, d = a[2], tonumber(a[3])
  local B = new_builder(a[1])
  visible_as(B.K, T_HASH)
  local cur = 0
  if vtype(B.K) == T_HASH then
    local v = string_value(get_elem(B.K, T_HASH, f))
    if v then
      local kind, n = parse_num(v)
      if kind == 0 then fail(E_HNOTFLOAT) end
      cur = n
    end
  end
  if bad_float(cur + d) or bad_float(d) then fail(E_NAN) end
  b_incr(B, T_HASH, f, 0, d)
  done(B)
  return string_value(B.K.elems[T_HASH][f])
end

-- sets

C.sadd = function(a)
  local B = new_builder(a[1])
  visible_as(B.K, T_SET)
  local live_before = vtype(B.K) == T_SET
  local added, seen = 0, {}
  for i = 2, #a do
    local mbr = a[i]
    if not seen[mbr] then
      seen[mbr] = true
      if not live_before or not live(get_elem(B.K, T_SET, mbr)) then added = added + 1 end
      b_set(B, T_SET, mbr, '')
    end
  end
  done(B)
  return added
end

C.srem = function(a) return remove_members(T_SET, a) end

-- sorted sets

-- zadd key flags score member [score member ...]; flags is a string of
-- letters: n(x) x(x) g(t) l(t) c(h) i(ncr)
C.zadd = function(a)
  local fl = a[2]
  local nx, xx, gt, lt, ch, incr = fl:find('n') ~= nil, fl:find('x') ~= nil, fl:find('g') ~= nil,
    fl:find('l') ~= nil, fl:find('c') ~= nil, fl:find('i') ~= nil
  local B = new_builder(a[1])
  visible_as(B.K, T_ZSET)
  local live_before = vtype(B.K) == T_ZSET
  local count, score, ok = 0, nil, false
  local scores = {}
  for i = 3, #a, 2 do
    local inc, mbr = to_num(a[i]), a[i + 1]
    local cur, exists = 0, false
    if scores[mbr] then
      cur, exists = scores[mbr], true
    elseif live_before then
      local s = score_value(get_elem(B.K, T_ZSET, mbr))
      if s then cur, exists = s, true end
    end
    if not ((nx and exists) or (xx and not exists)) then
      local nxt = inc
      if incr then
        nxt = cur + inc
        if nxt ~= nxt then fail(E_SCORENAN) end
      end
      if not (exists and ((gt and nxt <= cur) or (lt and nxt >= cur))) then
        if not exists then
          count = count + 1
        elseif nxt ~= cur and ch then
          count = count + 1
        end
        scores[mbr] = nxt
        score, ok = nxt, true
        if incr and exists then
          b_incr(B, T_ZSET, mbr, 0, inc)
        else
          b_set(B, T_ZSET, mbr, nxt)
        end
      end
    end
  end
  done(B)
  if incr then
    if not ok then return false end
    return fmt_float(score)
  end
  return count
end

C.zincrby = function(a)
  local d, mbr = to_num(a[2]), a[3]
  local B = new_builder(a[1])
  visible_as(B.K, T_ZSET)
  local cur = 0
  if vtype(B.K) == T_ZSET then cur = score_value(get_elem(B.K, T_ZSET, mbr)) or 0 end
  if cur + d ~= cur + d then fail(E_SCORENAN) end
  b_incr(B, T_ZSET, mbr, 0, d)
  done(B)
  return fmt_float(score_value(B.K.elems[T_ZSET][mbr]))
end

C.zrem = function(a) return remove_members(T_ZSET, a) end

-- dispatch ----------------------------------------------------------------------

-- run_cmd runs one command and returns its reply, errors as error replies
local function run_cmd(name, args)
  local cmd = C[name]
  if not cmd then return redis.error_reply('ERR unknown engine command ' .. tostring(name)) end
  local ok, res = pcall(cmd, args)
  if ok then return res end
  if type(res) == 'table' and res.err then res = res.err end
  res = tostring(res)
  if not res:find('^[A-Z]+ ') then res = 'ERR engine: ' .. res end
  return redis.error_reply(res)
end

-- gr_write: FCALL gr_write 0 region command args... runs one command;
-- FCALL gr_write 0 region * n argc1 command1 args1... argc2 ... runs n
-- commands in one call (the child groups concurrent writes this way) and
-- returns their replies in an array. Each command is still its own op.
local function gr_write(_, argv)
  begin_call()
  region = argv[1]
  local t0 = rcall('TIME')
  wall = tonumber(t0[1]) * 1000 + math.floor(tonumber(t0[2]) / 1000)
  db(1)
  local m = rcall('HMGET', 'meta', 'seq', 'ms', 'lc', 'ready')
  if m[4] ~= run_id() then
    -- This Redis process has not been checked against the region's stream
    -- (it is new, wiped, restarted from a snapshot or a promoted replica):
    -- issuing sequence numbers now could reuse OpIDs. The child marks it
    -- ready with the process's run id after checking (Engine.MarkReady).
    return redis.error_reply(E_NOTREADY)
  end
  seq, cms, clc = tonumber(m[1] or '0'), tonumber(m[2] or '0'), tonumber(m[3] or '0')
  logged, oplog = 0, {}
  -- the keys of SET and INCRBY commands: is their state all in db 0?
  -- Asked here, while in db 1, rather than once per command between two
  -- SELECTs.
  clean, clean_valid = {}, true
  local function pre(name, args, j)
    if (name == 'set' or name == 'incrby') and args[j] and clean[args[j]] == nil then
      clean[args[j]] = db1_empty(args[j])
    end
  end
  if argv[2] == '*' then
    local i = 4
    for _ = 1, tonumber(argv[3]) do
      pre(argv[i + 1], argv, i + 2)
      i = i + tonumber(argv[i]) + 1
    end
  else
    pre(argv[2], argv, 3)
  end
  local res
  if argv[2] == '*' then
    res = {}
    local i = 4
    for n = 1, tonumber(argv[3]) do
      local argc = tonumber(argv[i])
      local args = {}
      for j = i + 2, i + argc do args[#args + 1] = argv[j] end
      res[n] = run_cmd(argv[i + 1], args)
      i = i + argc + 1
    end
  else
    local args = {}
    for j = 3, #argv do args[#args + 1] = argv[j] end
    res = run_cmd(argv[2], args)
  end
  if logged > 0 then
    db(1)
    for j = 1, #oplog, 1000 do rcall('RPUSH', 'log', unpack_list(oplog, j, math.min(j + 999, #oplog))) end
    rcall('HSET', 'meta', 'seq', seq, 'ms', cms, 'lc', clc)
  end
  return res
end
