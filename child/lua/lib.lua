-- Global Replica engine library: the crdt package's merge rules in Lua.
-- Every function here mirrors a function of package crdt (named in its
-- comment); the differential tests hold the two to the same results.
--
-- Layout (docs/storage.md):
--   db 0: the user keyspace, exactly what clients see. A live string holds
--         its state record; a hash, set or sorted set holds its visible
--         values natively (field -> value, member, member -> score).
--   db 1: everything else. 'meta' (seq, ms, lc), 'applied' (origin -> seq),
--         'log' (the op log, a list of encoded ops), and per user key K:
--         'k:'..K string state when it is not live in db 0 (tombstone, or the
--         archive copy of a string with a TTL), 'h:'..K / 's:'..K / 'z:'..K
--         field or member -> state record, 'x:'..K the expiry register.

local VERSION = 1
local MAXSAFE = 9007199254740991
local T_STR, T_HASH, T_SET, T_ZSET = 1, 2, 3, 4
local TYPE_NAME = {string = T_STR, hash = T_HASH, set = T_SET, zset = T_ZSET}
local PREFIX = {'k:', 'h:', 's:', 'z:'}
local PERSIST = -1
local unpack_list
-- bound at the start of every call (begin): a function library may not
-- touch these at load time
local rcall, mp_pack, mp_unpack

local E_WRONGTYPE = 'WRONGTYPE Operation against a key holding the wrong kind of value'
local E_NOTINT = 'ERR value is not an integer or out of range'
local E_NOTFLOAT = 'ERR value is not a valid float'
local E_OVERFLOW = 'ERR increment or decrement would overflow'
local E_NAN = 'ERR increment would produce NaN or Infinity'
local E_HNOTINT = 'ERR hash value is not an integer'
local E_HNOTFLOAT = 'ERR hash value is not a float'
local E_SCORENAN = 'ERR resulting score is not a number (NaN)'
local E_NOTREADY = 'TRYAGAIN this region is recovering its state (its Redis is new, was wiped or restored); retry shortly'

local curdb = 0

-- begin prepares a function call: calls start in the caller's database 0
local function begin_call()
  rcall, mp_pack, mp_unpack, unpack_list = redis.call, cmsgpack.pack, cmsgpack.unpack, unpack
  curdb = 0
end

-- run_id is this Redis process's run id (INFO server), read once per
-- process: a library's locals live as long as the library.
local my_run_id
local function run_id()
  if not my_run_id then
    my_run_id = redis.call('INFO', 'server'):match('run_id:(%x+)')
  end
  return my_run_id
end

local function db(n)
  if curdb ~= n then rcall('SELECT', n); curdb = n end
end

-- fail aborts the command with a Redis error reply (level 0: no position)
local function fail(msg) error(msg, 0) end

-- numbers -------------------------------------------------------------------

-- crdt.isCanonicalInt
local function is_canonical_int(s)
  local n = #s
  if n == 0 or n > 20 then return false end
  local i = 1
  if s:sub(1, 1) == '-' then i = 2 end
  if i > n then return false end
  local c = s:sub(i, i)
  if c == '0' and (n > i or i == 2) then return false end
  return s:find('^%d+$', i) ~= nil
end

-- crdt.isDecimal
local function is_decimal(s)
  local i, n = 1, #s
  local c = s:sub(i, i)
  if c == '-' or c == '+' then i = i + 1 end
  local digits = 0
  while i <= n and s:byte(i) >= 48 and s:byte(i) <= 57 do i = i + 1; digits = digits + 1 end
  if i <= n and s:sub(i, i) == '.' then
    i = i + 1
    while i <= n and s:byte(i) >= 48 and s:byte(i) <= 57 do i = i + 1; digits = digits + 1 end
  end
  if digits == 0 then return false end
  c = s:sub(i, i)
  if i <= n and (c == 'e' or c == 'E') then
    i = i + 1
    c = s:sub(i, i)
    if c == '-' or c == '+' then i = i + 1 end
    local ed = 0
    while i <= n and s:byte(i) >= 48 and s:byte(i) <= 57 do i = i + 1; ed = ed + 1 end
    if ed == 0 then return false end
  end
  return i == n + 1
end

-- crdt.parseNum: returns kind (0 none, 1 int, 2 float) and the value
local function parse_num(s)
  if is_canonical_int(s) then
    local v = tonumber(s)
    if v and v >= -MAXSAFE and v <= MAXSAFE then return 1, v end
  end
  if is_decimal(s) then
    local v = tonumber(s)
    if v and v == v and v ~= math.huge and v ~= -math.huge then return 2, v end
  end
  return 0, 0
end

-- crdt.FormatFloat
local function fmt_float(f)
  if f == math.huge then return 'inf' end
  if f == -math.huge then return '-inf' end
  local s
  for p = 15, 17 do
    s = string.format('%.' .. p .. 'g', f)
    if tonumber(s) == f then break end
  end
  return s
end

-- to_num reads a number the child normalized (crdt.FormatFloat): also inf
local function to_num(s)
  if s == 'inf' or s == '+inf' then return math.huge end
  if s == '-inf' then return -math.huge end
  return tonumber(s)
end

local function fmt_int(n) return string.format('%d', n) end

-- element state --------------------------------------------------------------
-- el = {e = {{region, seq, ms, lc, val}...} sorted by region,
--       c = {region = {seq, start, i, f}}, r = {region = {seq, start, i, f}}}

local function sorted_keys(m)
  local ks = {}
  for k in pairs(m) do ks[#ks + 1] = k end
  table.sort(ks)
  return ks
end

local function dec_runs(a)
  local m = {}
  if a then for _, x in ipairs(a) do m[x[1]] = {x[2], x[3], x[4], x[5]} end end
  return m
end

local function by_region(a, b) return a[1] < b[1] end

local function enc_runs(m)
  local out = {}
  for k, r in pairs(m) do out[#out + 1] = {k, r[1], r[2], r[3], r[4]} end
  if #out > 1 then table.sort(out, by_region) end
  return out
end

local function dec_vec(a)
  local m = {}
  if a then for _, x in ipairs(a) do m[x[1]] = x[2] end end
  return m
end

local function enc_vec(m)
  local out = {}
  for i, k in ipairs(sorted_keys(m)) do out[i] = {k, m[k]} end
  return out
end

local function new_elem() return {e = {}, c = {}, r = {}} end

local function dec_rec(s)
  local a = mp_unpack(s)
  if type(a) ~= 'table' or a[1] ~= VERSION then fail('ERR corrupt state record') end
  return a
end

-- crdt.UnmarshalState
local function dec_state(s)
  if not s then return new_elem(), {e = {}, r = {}} end
  local a = dec_rec(s)
  return {e = a[2] or {}, c = dec_runs(a[3]), r = dec_runs(a[4])}, {e = a[5] or {}, r = dec_vec(a[6])}
end

-- dec_elem is dec_state's element alone (nil: no state yet)
local function dec_elem(s)
  if not s then return new_elem() end
  local a = dec_rec(s)
  return {e = a[2] or {}, c = dec_runs(a[3]), r = dec_runs(a[4])}
end

-- dec_exp is dec_state's expiry register alone
local function dec_exp(s)
  local a = dec_rec(s)
  return {e = a[5] or {}, r = dec_vec(a[6])}
end

local function elem_empty(el)
  return #el.e == 0 and next(el.c) == nil and next(el.r) == nil
end

-- crdt.MarshalState (element only)
local function enc_elem(el)
  local a = {VERSION, el.e}
  if next(el.c) ~= nil or next(el.r) ~= nil then a[3] = enc_runs(el.c) end
  if next(el.r) ~= nil then a[4] = enc_runs(el.r) end
  return mp_pack(a)
end

local function rmseq(el, region)
  local r = el.r[region]
  return r and r[1] or 0
end

-- crdt.Elem.Delta
local function delta(el)
  if next(el.c) == nil then return 0, 0, false end
  local i, f, has = 0, 0, false
  for _, r in ipairs(sorted_keys(el.c)) do
    local c, rm = el.c[r], el.r[r]
    local rs = rm and rm[1] or 0
    if c[1] > rs then
      has = true
      if rm and c[2] == rm[2] then
        i = i + (c[3] - rm[3]); f = f + (c[4] - rm[4])
      else
        i = i + c[3]; f = f + c[4]
      end
    end
  end
  return i, f, has
end

-- crdt.Elem.Winner
local function winner(el)
  local w
  for _, en in ipairs(el.e) do
    if not w or en[3] > w[3] or (en[3] == w[3] and (en[4] > w[4] or (en[4] == w[4] and en[1] > w[1]))) then
      w = en
    end
  end
  return w
end

local function live(el)
  if #el.e > 0 then return true end
  local _, _, has = delta(el)
  return has
end

-- crdt.Elem.StringValue
local function string_value(el)
  local w = winner(el)
  local di, df, has = delta(el)
  if not has then
    if w then return w[5] end
    return nil
  end
  local kind, base = 1, 0
  if w then kind, base = parse_num(w[5]) end
  if kind == 0 then return w[5] end
  if kind == 1 and df == 0 then return fmt_int(base + di) end
  return fmt_float(base + di + df)
end

-- crdt.Elem.ScoreValue
local function score_value(el)
  local w = winner(el)
  local di, df, has = delta(el)
  if not w and not has then return nil end
  return (w and w[5] or 0) + di + df
end

-- crdt.Elem.merge; returns a conflict kind or nil
local function merge(el, region, seq, ms, lc, eo)
  local rms = eo[3]
  local raised = false
  if rms then
    for _, x in ipairs(rms) do
      if x[2] > rmseq(el, x[1]) then el.r[x[1]] = {x[2], x[3], x[4], x[5]}; raised = true end
    end
  end
  local kept
  if raised then
    -- entries and counter runs are always above the removal context they
    -- were merged with: only a raised context removes any
    kept = {}
    for _, en in ipairs(el.e) do
      if en[2] > rmseq(el, en[1]) then kept[#kept + 1] = en end
    end
    el.e = kept
    for r, c in pairs(el.c) do
      if c[1] <= rmseq(el, r) then el.c[r] = nil end
    end
  end
  local kind = eo[4]
  local conflict
  if kind == 1 then
    if seq <= rmseq(el, region) then return nil end
    for _, en in ipairs(el.e) do
      if en[1] == region and en[2] == seq then return nil end
    end
    kept = {}
    for _, en in ipairs(el.e) do
      if en[1] ~= region then conflict = 'lww' end
      if not (en[1] == region and en[2] < seq) then kept[#kept + 1] = en end
    end
    if not conflict then
      for r in pairs(el.c) do
        if r ~= region then conflict = 'set-incr' end
      end
    end
    kept[#kept + 1] = {region, seq, ms, lc, eo[5]}
    if #kept > 1 then table.sort(kept, by_region) end
    el.e = kept
  elseif kind == 2 then
    local cur = el.c[region]
    if seq > rmseq(el, region) and seq > (cur and cur[1] or 0) then
      el.c[region] = {seq, eo[5], eo[6], eo[7]}
    end
  elseif rms and #rms > 0 and live(el) then
    conflict = 'remove'
  end
  return conflict
end

-- crdt.Elem.observed: the removal context of an op made now, as wire runs.
-- A region's context is its newest observed op: its counter run if that is
-- an increment, a bare sequence number if it is a register write.
local function observed(el)
  local rm = {}
  for _, en in ipairs(el.e) do
    local cur = rm[en[1]]
    if not cur or en[2] > cur[2] then rm[en[1]] = {en[1], en[2], 0, 0, 0} end
  end
  for r, c in pairs(el.c) do
    local cur = rm[r]
    if not cur or c[1] > cur[2] then rm[r] = {r, c[1], c[2], c[3], c[4]} end
  end
  local out = {}
  for _, run in pairs(rm) do out[#out + 1] = run end
  if #out > 1 then table.sort(out, by_region) end
  return out
end

-- expiry register: x = {e = {{region, seq, deadline}...}, r = {region = seq}}

-- crdt.Expiry.Deadline
local function deadline(x)
  local d = 0
  for _, en in ipairs(x.e) do
    if en[3] == PERSIST then return 0 end
    if en[3] > d then d = en[3] end
  end
  return d
end

local function exp_observed(x)
  local v = {}
  for _, en in ipairs(x.e) do
    if en[2] > (v[en[1]] or 0) then v[en[1]] = en[2] end
  end
  return enc_vec(v)
end

-- crdt.Expiry.merge
local function exp_merge(x, region, seq, xo)
  if xo[1] then
    for _, p in ipairs(xo[1]) do
      if p[2] > (x.r[p[1]] or 0) then x.r[p[1]] = p[2] end
    end
  end
  local kept = {}
  for _, en in ipairs(x.e) do
    if en[2] > (x.r[en[1]] or 0) then kept[#kept + 1] = en end
  end
  x.e = kept
  local d = xo[2]
  if d == 0 or seq <= (x.r[region] or 0) then return nil end
  for _, en in ipairs(x.e) do
    -- this op, or a later one of its origin, which observed it
    if en[1] == region and en[2] >= seq then return nil end
  end
  local conflict
  if #x.e > 0 then conflict = 'ttl' end
  kept = {}
  for _, en in ipairs(x.e) do
    if en[1] ~= region then kept[#kept + 1] = en end
  end
  kept[#kept + 1] = {region, seq, d}
  if #kept > 1 then table.sort(kept, by_region) end
  x.e = kept
  return conflict
end

local function enc_exp(x)
  if #x.e == 0 and next(x.r) == nil then return nil end
  local a = {VERSION, {}, {}, {}, x.e}
  if next(x.r) ~= nil then a[6] = enc_vec(x.r) end
  return mp_pack(a)
end

-- the key being worked on -----------------------------------------------------
-- K = {name, now, vt0 (visible type before, 0 none), x (expiry), d0 (deadline
--      before), elems = {[t] = {[name] = el}}, dirty = {[t] = {[name] = true}},
--      loaded_all = {[t] = true}}

-- grace is how long (ms) the state of an expired key outlives its deadline
local function grace()
  db(1)
  return tonumber(rcall('HGET', 'meta', 'grace') or '604800000')
end

-- load_key reads what every command needs of a key: its visible type, its
-- string state and its expiry register. str_hint says the command works on
-- strings, so one GET answers both the type and the state.
local function load_key(name, now, str_hint)
  db(0)
  local K = {name = name, now = now, vt0 = 0, elems = {{}, {}, {}, {}}, dirty = {{}, {}, {}, {}}, loaded_all = {}}
  local s
  if str_hint then
    s = redis.pcall('GET', name)
    if type(s) == 'table' then
      s = nil
      K.vt0 = TYPE_NAME[rcall('TYPE', name)['ok']] or 0
    elseif s then
      K.vt0 = T_STR
    end
  else
    K.vt0 = TYPE_NAME[rcall('TYPE', name)['ok']] or 0
    if K.vt0 == T_STR then s = rcall('GET', name) end
  end
  db(1)
  if not s then
    s = rcall('GET', 'k:' .. name)
    K.kexists = s ~= false
  end
  if s then K.elems[T_STR][''] = dec_elem(s) end
  local xs = rcall('GET', 'x:' .. name)
  if xs then
    K.x = dec_exp(xs)
  else
    K.x = {e = {}, r = {}}
  end
  K.d0 = deadline(K.x)
  if K.d0 ~= 0 then K.kexists = true end
  return K
end

local function expired(K)
  local d = deadline(K.x)
  return d ~= 0 and K.now >= d
end

-- visible type now, as clients see it
local function vtype(K)
  if expired(K) then return 0 end
  return K.vt0
end

local function get_elem(K, t, fname)
  local el = K.elems[t][fname]
  if el then return el end
  if t == T_STR then
    el = new_elem()
  else
    db(1)
    el = dec_elem(rcall('HGET', PREFIX[t] .. K.name, fname))
  end
  K.elems[t][fname] = el
  return el
end

local function load_all(K, t)
  if K.loaded_all[t] or t == T_STR then return end
  db(1)
  local kv = rcall('HGETALL', PREFIX[t] .. K.name)
  for i = 1, #kv, 2 do
    if not K.elems[t][kv[i]] then K.elems[t][kv[i]] = dec_elem(kv[i + 1]) end
  end
  K.loaded_all[t] = true
end

local function has_state(K, t)
  if t == T_STR then return K.elems[T_STR][''] ~= nil end
  db(1)
  return rcall('EXISTS', PREFIX[t] .. K.name) == 1
end

local function type_live(K, t)
  if t == T_STR then
    local el = K.elems[T_STR]['']
    return el ~= nil and live(el)
  end
  if not K.loaded_all[t] and not has_state(K, t) then
    for _, el in pairs(K.elems[t]) do
      if live(el) then return true end
    end
    return false
  end
  load_all(K, t)
  for _, el in pairs(K.elems[t]) do
    if live(el) then return true end
  end
  return false
end

-- db 0 view of one element of the visible type
local function view_elem(K, t, fname, el)
  db(0)
  if t == T_STR then
    if live(el) then rcall('SET', K.name, enc_elem(el)) else rcall('DEL', K.name) end
  elseif t == T_HASH then
    local v = live(el) and string_value(el)
    if v then rcall('HSET', K.name, fname, v) else rcall('HDEL', K.name, fname) end
  elseif t == T_SET then
    if live(el) then rcall('SADD', K.name, fname) else rcall('SREM', K.name, fname) end
  else
    local sc = score_value(el)
    if sc then rcall('ZADD', K.name, fmt_float(sc), fname) else rcall('ZREM', K.name, fname) end
  end
end

-- materialize rebuilds the db 0 view of type t from scratch
local function materialize(K, t)
  db(0)
  rcall('DEL', K.name)
  if t == 0 then return end
  load_all(K, t)
  for fname, el in pairs(K.elems[t]) do
    if live(el) then view_elem(K, t, fname, el) end
  end
end

local function any_live(els)
  for _, el in pairs(els) do
    if live(el) then return true end
  end
  return false
end

-- save writes back dirty element state and the expiry register and brings
-- the db 0 view up to date. It is the one place that decides what clients
-- see after a write or an applied op.
local function save(K, xdirty)
  local now = K.now
  local d = deadline(K.x)
  local exp = d ~= 0 and now >= d
  local was_expired = K.d0 ~= 0 and now >= K.d0
  local vt0 = K.vt0
  local sel = K.elems[T_STR]['']
  -- 1. element state in db 1 (a live string without TTL lives in db 0 only)
  for t = T_STR, T_ZSET do
    for fname in pairs(K.dirty[t]) do
      local el = K.elems[t][fname]
      db(1)
      if t == T_STR then
        if elem_empty(el) or (live(el) and d == 0) then
          if K.kexists then rcall('DEL', 'k:' .. K.name) end
        else
          rcall('SET', 'k:' .. K.name, enc_elem(el))
        end
      elseif elem_empty(el) then
        rcall('HDEL', PREFIX[t] .. K.name, fname)
      else
        rcall('HSET', PREFIX[t] .. K.name, fname, enc_elem(el))
      end
    end
  end
  -- 2. the db 0 view of the type that was visible, element by element
  if vt0 ~= 0 and not exp then
    for fname in pairs(K.dirty[vt0]) do view_elem(K, vt0, fname, K.elems[vt0][fname]) end
  end
  -- 3. the type visible now: the first live one in precedence order
  local vt = 0
  if not exp then
    for t = T_STR, T_ZSET do
      local l
      if t == vt0 then
        if t == T_STR then
          l = live(sel)
        else
          -- a live element just written to the view keeps the key there
          l = false
          for fname in pairs(K.dirty[t]) do
            if live(K.elems[t][fname]) then l = true; break end
          end
          if not l then
            db(0)
            l = rcall('EXISTS', K.name) == 1
          end
        end
      elseif (vt0 == 0 and not was_expired) or t < vt0 then
        -- not live before: only what this change touched can be live now
        l = any_live(K.elems[t])
      else
        -- hidden behind the old visible type, or the key came back from expiry
        l = type_live(K, t)
      end
      if l then vt = t; break end
    end
  end
  if vt ~= vt0 then materialize(K, vt) end
  -- 4. expiry: the db 0 key goes at the deadline, the state in db 1 a grace
  --    period later, so that late ops still find what they merge into
  if xdirty then
    db(1)
    local xs = enc_exp(K.x)
    if xs then rcall('SET', 'x:' .. K.name, xs) else rcall('DEL', 'x:' .. K.name) end
  end
  if d ~= 0 then
    if vt ~= 0 then
      db(0)
      rcall('PEXPIREAT', K.name, d)
    end
    local g = grace()
    if vt == T_STR and not K.dirty[T_STR][''] then rcall('SET', 'k:' .. K.name, enc_elem(sel)) end
    for t = T_STR, T_ZSET do rcall('PEXPIREAT', PREFIX[t] .. K.name, d + g) end
    rcall('PEXPIREAT', 'x:' .. K.name, d + g)
  elseif K.d0 ~= 0 then
    -- the deadline is gone: nothing may expire any more
    if vt ~= 0 then
      db(0)
      rcall('PERSIST', K.name)
    end
    db(1)
    for t = T_STR, T_ZSET do rcall('PERSIST', PREFIX[t] .. K.name) end
    rcall('PERSIST', 'x:' .. K.name)
    if vt == T_STR then rcall('DEL', 'k:' .. K.name) end
  end
  return vt
end

-- conflict log ----------------------------------------------------------------

local SHORT = 40 -- bytes of a value kept in a conflict record

local function short(v)
  if v == nil then return '' end
  if type(v) == 'number' then return fmt_float(v) end
  if #v > SHORT then return v:sub(1, SHORT) end
  return v
end

-- conflict_rec describes a conflict that merging an op met, for the conflict
-- log (child.Engine.Conflicts words the explanation): the facts of what won
-- and what it won over, read from the merged element.
local function conflict_rec(kind, K, t, fname, el, op)
  local r = {at = K.now, key = K.name, type = t, field = fname, kind = kind, origin = op[2], seq = op[3]}
  if kind == 'lww' then
    local w = winner(el)
    r.win = {w[1], w[3], w[4], short(w[5])}
    local lose = {}
    for _, en in ipairs(el.e) do
      if en ~= w then lose[#lose + 1] = {en[1], en[3], en[4], short(en[5])} end
    end
    r.lose = lose
  elseif kind == 'set-incr' or kind == 'remove' then
    -- set-incr: the regions whose increments the write had not observed;
    -- remove: the regions whose writes the remove had not observed
    local regs, seen = {}, {}
    if kind == 'remove' then
      for _, en in ipairs(el.e) do regs[#regs + 1] = en[1]; seen[en[1]] = true end
    end
    for _, rg in ipairs(sorted_keys(el.c)) do
      if not seen[rg] and (kind == 'remove' or rg ~= op[2]) then regs[#regs + 1] = rg end
    end
    table.sort(regs)
    r.regions = regs
  end
  return r
end

-- crdt.Key.liveTypes: the number of types with a live element (expiry aside)
local function live_types(K)
  local n = 0
  for t = T_STR, T_ZSET do
    if type_live(K, t) then n = n + 1 end
  end
  return n
end

-- type_check reports whether an op can make a second type live on the key
-- (crdt.Key.Apply's type conflict), so that only then the types are
-- counted: an op that writes no type but the visible one cannot, nor can
-- an op of one type on a key with no live type.
local function type_check(K, op)
  local ts, n = {}, 0
  if K.vt0 ~= 0 then ts[K.vt0] = true; n = 1 end
  for _, eo in ipairs(op[7]) do
    if eo[4] ~= 0 and not ts[eo[1]] then ts[eo[1]] = true; n = n + 1 end
  end
  if K.vt0 == 0 and K.d0 ~= 0 then return n > 0 end -- expired: hidden types
  return n > 1
end

local NONE = {} -- an empty list that is never written to

-- apply_str_live applies an op that writes the string element of a key and
-- nothing else (no other element, no expiry part) when that key is a live
-- string without a deadline in db 0 (no TTL there), or a key without any
-- state, and is a live string afterwards: then the expiry register cannot
-- matter, no other type is visible before or after and the string's state
-- lives in db 0 alone (docs/storage.md), so the op is merged there: what
-- load_key, merge and save would do, with fewer reads. It writes nothing
-- and returns nil when the op or the key is not that case.
local function apply_str_live(op, now)
  local eos = op[7]
  if #eos ~= 1 or op[8][1] then return nil end
  local eo = eos[1]
  if eo[1] ~= T_STR then return nil end
  local name = op[6]
  db(0)
  local s = redis.pcall('GET', name)
  local el
  if s == false then
    -- absent from db 0: the same holds when the key has no state in db 1
    -- at all (no tombstone, expiry register or other type)
    db(1)
    if rcall('EXISTS', 'k:' .. name, 'x:' .. name, 'h:' .. name, 's:' .. name, 'z:' .. name) ~= 0 then return nil end
    el = new_elem()
  elseif type(s) ~= 'string' or rcall('PTTL', name) ~= -1 then
    return nil
  else
    el = dec_elem(s)
  end
  local c = merge(el, op[2], op[3], op[4], op[5], eo)
  if not live(el) then return nil end
  db(0)
  rcall('SET', name, enc_elem(el))
  if not c then return NONE, NONE end
  return {c}, {conflict_rec(c, {name = name, now = now}, T_STR, '', el, op)}
end

-- apply one decoded op (wire array) to its key; returns the conflict kinds
-- and a record of each for the conflict log
local function apply_op(op, now)
  local fc, fr = apply_str_live(op, now)
  if fc then return fc, fr end
  local region, seq, ms, lc = op[2], op[3], op[4], op[5]
  local K = load_key(op[6], now, op[7][1] and op[7][1][1] == T_STR)
  local conflicts, recs = {}, {}
  local before = type_check(K, op) and live_types(K)
  for _, eo in ipairs(op[7]) do
    local t, fname = eo[1], eo[2]
    local el = get_elem(K, t, fname)
    local c = merge(el, region, seq, ms, lc, eo)
    if c then
      conflicts[#conflicts + 1] = c
      recs[#recs + 1] = conflict_rec(c, K, t, fname, el, op)
    end
    K.dirty[t][fname] = true
  end
  local xdirty = false
  if op[8][1] then
    local c = exp_merge(K.x, region, seq, op[8])
    if c then
      conflicts[#conflicts + 1] = c
      local r = conflict_rec(c, K, 0, '', nil, op)
      local d, w, regs = 0, nil, {}
      for _, en in ipairs(K.x.e) do
        regs[#regs + 1] = en[1]
        if en[3] == PERSIST then r.persist = true; w = en[1] end
        if not r.persist and en[3] > d then d = en[3]; w = en[1] end
      end
      r.deadline, r.win, r.regions = deadline(K.x), {w}, regs
      recs[#recs + 1] = r
    end
    xdirty = true
  end
  if before then
    local after = live_types(K)
    if after > 1 and after > before then
      conflicts[#conflicts + 1] = 'type'
      local r = conflict_rec('type', K, 0, '', nil, op)
      r.types = {}
      for t = T_STR, T_ZSET do
        if type_live(K, t) then r.types[#r.types + 1] = t end
      end
      recs[#recs + 1] = r
    end
  end
  local vt = save(K, xdirty)
  for _, r in ipairs(recs) do
    if r.type == 0 then r.type = vt end
  end
  return conflicts, recs
end
