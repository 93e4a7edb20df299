-- Apply one batch of normalised events to the online state, atomically.
--
-- Keys are derived from the prefix inside the script, so this needs a single Redis
-- node (or a primary with replicas). Under Redis Cluster the guarantee drops to
-- at-least-once; see README.
--
-- The result is a deterministic function of the events whatever the interleaving of
-- partitions and topics (within the bound described below): every shared update commutes.
-- Markov rows keep exact weighted counts (the top K is taken when reading, by count then
-- item); popularity uses forward decay in whole
-- half-life steps, w * 2^(floor(ts / half_life) - landmark_step), so every term is a power
-- of two times the weight and float sums are exact in any order.
--
-- ARGV layout (built by pack_batch in streamrec/state/store.py):
--   1 prefix  2 sequence length L  3 reorder window W (events kept per user)
--   4 popularity half-life ms (0: none)
--   5 event ids remembered per user D (0: no dedupe)  6 allowed lateness ms (<0: off)
--   7 watermark group  8, 9, 10 weights of view, click, purchase  11 user TTL s (0: never)
--   12 bought items kept per user (0: all)  13 number of partitions B, then
--   B x (topic, partition, expected watermark, new watermark; -1: none), then the
--   number of events N,
--   then one string of N records in arrival order (offsets increase within each
--   partition), split by RS (\30), each: partition number 1..B, offset, idh (a second
--   32-bit hash of event_id), user_id, item_id, type, ts, tie (crc32 of event_id), split by
--   US (\31) (ids hold no control characters).
-- Returns {-1, partition number, its watermark, ...} when a partition's watermark is below
-- the expected one (nothing applied), else {applied, below_watermark, duplicates, late,
-- online_hits, online_evaluations, {user, packed sequence, ...} of the users this batch
-- touched (but those whose events were all erased), erased, corrupted user hashes reset}:
-- an event that moves a user to a new item is an online evaluation of the list last served
-- to that user (sr:served:{user}, packed indexes, written by serving; read only here), and
-- a hit when its item was in that list.

local prefix = ARGV[1]
local L = tonumber(ARGV[2])
local W = tonumber(ARGV[3])
local half_life = tonumber(ARGV[4])
local D = tonumber(ARGV[5])
local lateness = tonumber(ARGV[6])
local group = ARGV[7]
local user_ttl = tonumber(ARGV[11])
local bought_kept = tonumber(ARGV[12])
local nblocks = tonumber(ARGV[13])

local idx_key = prefix .. 'item:idx'
local ids_key = prefix .. 'item:ids'
local pop_key = prefix .. 'pop'
local meta_key = prefix .. 'pop:meta'
local total_key = prefix .. 'mk:total'
local erased_key = prefix .. 'erased'
-- most batches find no erasure at all: one EXISTS instead of an HGET per user
local any_erased = redis.call('EXISTS', erased_key) == 1

local applied, below_wm, duplicates, late, hits, evaluations = 0, 0, 0, 0, 0, 0
local erased = 0
local corrupted = 0  -- user hashes found corrupted (see user_state)

local meta = redis.call('HMGET', meta_key, 'landmark_step', 'max_ts')
local landmark = tonumber(meta[1])
local max_ts = tonumber(meta[2])
local meta_dirty = false

local function f17(x)
  return string.format('%.17g', x)
end

-- Within a batch, writes are gathered in Lua tables and made once per user, item, row
-- and transition at the end (sums of weights and of powers of two are exact, so this
-- equals one write per event).
local item_cache = {}
local function item_index(item)
  local idx = item_cache[item]
  if idx then
    return idx
  end
  idx = redis.call('HGET', idx_key, item)
  if idx then
    idx = tonumber(idx)
  else
    idx = redis.call('RPUSH', ids_key, item) - 1
    redis.call('HSET', idx_key, item, idx)
  end
  item_cache[item] = idx
  return idx
end

local pop_add, pop_items = {}, {}
local function flush_popularity()
  for _, idx in ipairs(pop_items) do
    redis.call('ZINCRBY', pop_key, f17(pop_add[idx]), idx)
  end
  pop_add, pop_items = {}, {}
end

local function add_pop(idx, x)
  if pop_add[idx] == nil then
    pop_add[idx] = x
    pop_items[#pop_items + 1] = idx
  else
    pop_add[idx] = pop_add[idx] + x
  end
end

-- Forward decay in whole steps: add w * 2^(step(ts) - landmark), landmark being a step
-- index. It moves forward (rescaling every score by a power of two, which is exact)
-- before the exponent can overflow.
local function add_popularity(idx, w, ts)
  if max_ts == nil or ts > max_ts then
    max_ts = ts
    meta_dirty = true
  end
  if half_life <= 0 then
    add_pop(idx, w)
    return
  end
  local step = math.floor(ts / half_life)
  if landmark == nil then
    landmark = step
    meta_dirty = true
  end
  local e = step - landmark
  if e > 512 then
    flush_popularity()  -- gathered terms are relative to the old landmark
    local shift = e
    redis.call('ZUNIONSTORE', pop_key, 1, pop_key, 'WEIGHTS', f17(2 ^ (-shift)))
    landmark = landmark + shift
    meta_dirty = true
    e = e - shift
  end
  add_pop(idx, w * 2 ^ e)
end

local mk_add, mk_pairs, total_add, total_rows = {}, {}, {}, {}
local function add_transition(last, c, w)
  local row = mk_add[last]
  if row == nil then
    row = {}
    mk_add[last] = row
    total_add[last] = 0
    total_rows[#total_rows + 1] = last
  end
  if row[c] == nil then
    row[c] = w
    mk_pairs[#mk_pairs + 1] = {last, c}
  else
    row[c] = row[c] + w
  end
  total_add[last] = total_add[last] + w
end

-- Each user's events are kept as a window of the last W (ARGV 3) sorted by the total key
-- (ts, type rank view < click < purchase, tie = crc32 of event_id), packed 21 bytes each:
-- ts (double), tie (u32), idh (u32, a second hash of event_id), item index (u32), type
-- rank (u8). The sequence ``seq`` is the
-- user's history with consecutive repeats of an item collapsed (view -> click -> purchase
-- of one item is one step), last L items; a Markov transition is counted for every pair of
-- consecutive events (in key order) of different items, with the weight of the later one.
-- An event newer than the window's last is appended (the common case); one that falls
-- inside the window is inserted in place and the transition it splits is corrected (the
-- old pair removed, the two new pairs added), so the state is the same whatever order the
-- events arrive in, as long as each arrives before W later events of its user (and within
-- the allowed lateness). An event beyond that bound is late: it counts in popularity, the
-- bought set and the event count, not in the sequence or the transitions.
--
-- Duplicates (the same event_id published again, at a new offset) are found by the event
-- id's 64-bit hash (tie, idh) among the user's last D events: the window's, then ``ids``,
-- the hashes of the D - W events that left the window most recently (and of late events),
-- 8 bytes each, newest last. Memory is bounded per user, not per event.
local ENTRY = 21
local ID = 8
local ring = math.max(0, D - W) * ID
local rank_of = {view = 0, click = 1, purchase = 2}
local weight_of = {[0] = tonumber(ARGV[8]), [1] = tonumber(ARGV[9]), [2] = tonumber(ARGV[10])}

-- users: {seq, win, ids, ts, ts_text, n, served, dirty, erased_at, kept}, read once per
-- batch. A forgotten user (streamrec/state/erasure.py) has an entry in the erased hash,
-- under the SHA-1 of their id, with the time of the erasure: their events up to that time
-- are skipped entirely (a replay does not bring them back); newer ones start a fresh user.
local users = {}
local touched_list = {}
local function user_state(user)
  local u = users[user]
  if u == nil then
    local ukey = prefix .. 'u:' .. user
    local fields = redis.pcall('HMGET', ukey, 'seq', 'ts', 'win', 'ids', 'n')
    if fields.err then  -- not a hash: corrupted (not written by streamrec)
      corrupted = corrupted + 1
      redis.call('DEL', ukey)
      fields = {}
    end
    local served = redis.pcall('GET', prefix .. 'served:' .. user)
    if type(served) == 'table' and served.err then
      served = false
    end
    u = {seq = fields[1] or '', ts = tonumber(fields[2]), win = fields[3] or '',
         ids = fields[4] or '', n = 0, served = served, dirty = false,
         erased_at = any_erased and
           tonumber(redis.call('HGET', erased_key, redis.sha1hex(user))) or nil,
         kept = false}
    local bad_n = fields[5] ~= false and fields[5] ~= nil and
      not string.match(fields[5], '^%-?%d+$')
    if #u.seq % 4 ~= 0 or #u.win % ENTRY ~= 0 or #u.ids % ID ~= 0 or bad_n or
        (fields[2] and u.ts == nil) then
      -- a corrupted user hash (not written by this script): it starts anew rather than
      -- fail every batch that holds this user
      corrupted = corrupted + 1
      redis.call('DEL', ukey)
      u.seq, u.win, u.ids, u.ts, u.dirty = '', '', '', nil, true
    end
    users[user] = u
    touched_list[#touched_list + 1] = user
  end
  return u
end

local function unpack_entry(win, pos)
  local ts, tie, idh, item, rank = struct.unpack('<dI4I4I4B', win, pos)
  return {ts = ts, tie = tie, idh = idh, item = item, rank = rank}
end

local function pack_entry(e)
  return struct.pack('<dI4I4I4B', e.ts, e.tie, e.idh, e.item, e.rank)
end

-- remember an event id among the ids of events no longer in the window
local function remember(u, id)
  if ring > 0 then
    local ids = u.ids .. id
    if #ids > ring then
      ids = string.sub(ids, #ids - ring + 1)
    end
    u.ids = ids
    u.dirty = true
  end
end

-- whether the packed id occurs in s at an offset of ``at`` within records of ``size``
local function holds(s, id, size, at)
  local from = 1
  while true do
    local pos = string.find(s, id, from, true)
    if pos == nil then return false end
    if (pos - 1) % size == at then return true end
    from = pos + 1
  end
end

local function seen(u, id)
  return holds(u.win, id, ENTRY, 8) or holds(u.ids, id, ID, 0)
end

local function before(a, b)  -- the total order of a user's events
  if a.ts ~= b.ts then return a.ts < b.ts end
  if a.rank ~= b.rank then return a.rank < b.rank end
  return a.tie < b.tie
end

-- items of the window with consecutive repeats collapsed
local function collapse(entries)
  local out, last = {}, nil
  for _, e in ipairs(entries) do
    if e.item ~= last then
      out[#out + 1] = e.item
      last = e.item
    end
  end
  return out
end

local function pack_items(items, from)
  local parts = {}
  for k = math.max(1, from), #items do
    parts[#parts + 1] = struct.pack('<I4', items[k])
  end
  return table.concat(parts)
end

local function pair(a, b, sign)  -- the transition of two consecutive events, if any
  if a ~= nil and a.item ~= b.item then
    add_transition(a.item, b.item, sign * weight_of[b.rank])
  end
end

local function evaluate_online(u, c)
  if u.served then
    evaluations = evaluations + 1
    for pos = 1, #u.served - 3, 4 do
      if struct.unpack('<I4', u.served, pos) == c then
        hits = hits + 1
        break
      end
    end
  end
end

-- the oldest entry leaves a window over W (its id is remembered)
local function evict(u)
  if #u.win > ENTRY * W then
    remember(u, string.sub(u.win, 9, 16))
    u.win = string.sub(u.win, ENTRY + 1)
  end
end

-- whether an event would be late (beyond the window or the allowed lateness)
local function beyond(u, x)
  if lateness >= 0 and u.ts ~= nil and u.ts - x.ts > lateness then
    return true
  end
  return #u.win >= ENTRY * W and before(x, unpack_entry(u.win, 1))
end

-- insert x inside the window (it is older than the window's last entry): returns false
-- when it is beyond the window (the window is full and x is older than all of it)
local function insert(u, x)
  local entries = {}
  for pos = 1, #u.win, ENTRY do
    entries[#entries + 1] = unpack_entry(u.win, pos)
  end
  if #entries >= W and before(x, entries[1]) then
    return false
  end
  local k = #entries
  while k >= 1 and before(x, entries[k]) do
    k = k - 1
  end
  local p, q = entries[k], entries[k + 1]  -- x goes between them (q is never nil)
  pair(p, q, -1)
  pair(p, x, 1)
  pair(x, q, 1)
  -- seq = last L of (the items before the window, collapsed) ++ collapse(window): the
  -- items of the old seq that do not come from the window are kept (a run that began
  -- before the window counts as the window's on both sides: an insert changes the first
  -- entry only of a window that never evicted, whose items are all of the sequence)
  local old_items = {}
  for pos = 1, #u.seq - 3, 4 do
    old_items[#old_items + 1] = struct.unpack('<I4', u.seq, pos)
  end
  local from_window = collapse(entries)
  local keep = #old_items - math.min(#old_items, #from_window)
  table.insert(entries, k + 1, x)
  local items = {}
  for j = 1, keep do items[j] = old_items[j] end
  for _, item in ipairs(collapse(entries)) do items[#items + 1] = item end
  u.seq = pack_items(items, #items - L + 1)
  local parts = {}
  for j, e in ipairs(entries) do
    parts[j] = pack_entry(e)
  end
  u.win = table.concat(parts)
  evict(u)
  return true
end

-- The bought set: a sorted set of item index -> the latest purchase time, kept to the
-- bought_kept latest by (time, item id): whatever the order purchases arrive in, it ends
-- as the bought_kept items with the latest purchases, ties going to the greater item id
-- (ids, not indexes: indexes depend on arrival order). An item trimmed out comes back only
-- with a purchase later than every kept one's earliest.
local function trim_bought(key)
  local excess = redis.call('ZCARD', key) - bought_kept
  if excess <= 0 then
    return
  end
  local edge = redis.call('ZRANGE', key, excess, excess, 'WITHSCORES')[2]  -- first kept
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. edge)
  excess = redis.call('ZCARD', key) - bought_kept
  if excess <= 0 then
    return
  end
  local tied = redis.call('ZRANGEBYSCORE', key, edge, edge)
  local id_of = {}
  for _, member in ipairs(tied) do
    id_of[member] = redis.call('LINDEX', ids_key, tonumber(member)) or ''
  end
  table.sort(tied, function(a, b) return id_of[a] < id_of[b] end)
  for k = 1, excess do
    redis.call('ZREM', key, tied[k])
  end
end

-- A plain set (written before the bought sets were bounded) is converted, its items at
-- time 0.
local function add_bought(key, c, ts_text)
  local added = redis.pcall('ZADD', key, 'GT', ts_text, c)
  if type(added) == 'table' and added.err and string.sub(added.err, 1, 9) ~= 'WRONGTYPE' then
    redis.call('ZADD', key, 'GT', ts_text, c)  -- any other error (OOM): raised as it is
  elseif type(added) == 'table' and added.err then
    local old = redis.pcall('SMEMBERS', key)
    redis.call('DEL', key)
    if type(old) == 'table' and not old.err then
      for _, member in ipairs(old) do
        redis.call('ZADD', key, 0, member)
      end
    else
      corrupted = corrupted + 1  -- neither: started anew
    end
    redis.call('ZADD', key, 'GT', ts_text, c)
  end
  if bought_kept > 0 then
    trim_bought(key)
  end
end

local function apply(u, user, item, etype, ts_text, tie, idh)
  local ts = tonumber(ts_text)
  local c = item_index(item)
  local rank = rank_of[etype]
  local w = weight_of[rank]
  add_popularity(c, w, ts)
  if etype == 'purchase' then
    add_bought(prefix .. 'u:' .. user .. ':bought', c, ts_text)
  end
  u.n = u.n + 1
  local x = {ts = ts, tie = tie, idh = idh, item = c, rank = rank}
  if lateness >= 0 and u.ts ~= nil and u.ts - ts > lateness then
    late = late + 1
    remember(u, struct.pack('<I4I4', tie, idh))
    return
  end
  local last = nil
  if #u.win >= ENTRY then
    last = unpack_entry(u.win, #u.win - ENTRY + 1)
  end
  if last ~= nil and before(x, last) then
    if not insert(u, x) then
      late = late + 1
      remember(u, struct.pack('<I4I4', tie, idh))
      return
    end
  else
    pair(last, x, 1)
    if last == nil or last.item ~= c then
      evaluate_online(u, c)
      local seq = u.seq .. struct.pack('<I4', c)
      if #seq > 4 * L then
        seq = string.sub(seq, #seq - 4 * L + 1)
      end
      u.seq = seq
    end
    u.win = u.win .. pack_entry(x)
    evict(u)
  end
  if u.ts == nil or ts > u.ts then
    u.ts = ts
    u.ts_text = ts_text
  end
  u.dirty = true
end

-- Each partition's watermark must be at least what the worker knows was applied before
-- (expect): a state that lost applied writes (a Redis crash losing its last writes) is
-- refused before anything is written, with its watermarks, so that the worker reads
-- those partitions again from there.
local wm_keys, wms, highs, targets = {}, {}, {}, {}
local regressed = {-1}
local i = 14
for b = 1, nblocks do
  wm_keys[b] = prefix .. 'wm:' .. group .. ':' .. ARGV[i] .. ':' .. ARGV[i + 1]
  wms[b] = tonumber(redis.call('GET', wm_keys[b]) or '-1')
  if wms[b] < tonumber(ARGV[i + 2]) then
    regressed[#regressed + 1] = b
    regressed[#regressed + 1] = wms[b]
  end
  targets[b] = tonumber(ARGV[i + 3])
  i = i + 4
end
if #regressed > 1 then
  return regressed
end
local nevents = tonumber(ARGV[i])
local records = ARGV[i + 1]
local RECORD = '^([^\31]*)\31([^\31]*)\31([^\31]*)\31([^\31]*)\31([^\31]*)\31([^\31]*)\31' ..
  '([^\31]*)\31([^\30]*)\30?()'
local pos = 1
for n = 1, nevents do
  local block, offset_s, idh_s, user, item, etype, ts, tie_s, after =
    string.match(records, RECORD, pos)
  if after == nil then
    return redis.error_reply('apply_batch: event record ' .. n .. ' of ' .. nevents ..
      ' is malformed at byte ' .. pos)
  end
  pos = after
  local b = tonumber(block)
  local offset = tonumber(offset_s)
  local tie, idh = tonumber(tie_s), tonumber(idh_s)
  local u = user_state(user)
  if u.erased_at ~= nil and tonumber(ts) <= u.erased_at then
    -- an event of a forgotten user, from before the erasure: as if never published
    erased = erased + 1
    if highs[b] == nil or offset > tonumber(highs[b]) then
      highs[b] = offset_s
    end
  else
    u.kept = true
    local dup = D > 0 and seen(u, struct.pack('<I4I4', tie, idh))
    -- At or below the watermark: a redelivery, unless dedupe is on, its event_id is not
    -- among the user's last D and it is not late, which means the log was reset (a broker
    -- that lost its data): apply.
    if offset <= wms[b] and (D <= 0 or dup or
        beyond(u, {ts = tonumber(ts), tie = tie, rank = rank_of[etype]})) then
      below_wm = below_wm + 1
    else
      if highs[b] == nil or offset > tonumber(highs[b]) then
        highs[b] = offset_s
      end
      if dup then
        duplicates = duplicates + 1
      else
        apply(u, user, item, etype, ts, tie, idh)
        applied = applied + 1
      end
    end
  end
end
for b = 1, nblocks do
  local high = math.max(tonumber(highs[b] or '-1'), targets[b])
  if high > wms[b] then
    redis.call('SET', wm_keys[b], string.format('%d', high))
  end
end

flush_popularity()
-- corrections can take a count back to zero: the pair is then removed, as if never seen
for _, p in ipairs(mk_pairs) do
  local delta = mk_add[p[1]][p[2]]
  if delta ~= 0 then
    local row = prefix .. 'mk:' .. p[1]
    if tonumber(redis.call('ZINCRBY', row, f17(delta), p[2])) <= 0 then
      redis.call('ZREM', row, p[2])
    end
  end
end
for _, last in ipairs(total_rows) do
  if total_add[last] ~= 0 and
      tonumber(redis.call('HINCRBYFLOAT', total_key, last, f17(total_add[last]))) <= 0 then
    redis.call('HDEL', total_key, last)
  end
end

local sequences = {}
for _, user in ipairs(touched_list) do
  local u = users[user]
  local ukey = prefix .. 'u:' .. user
  if u.dirty then
    redis.call('HSET', ukey, 'seq', u.seq, 'win', u.win, 'ids', u.ids)
  end
  if u.ts_text then
    redis.call('HSET', ukey, 'ts', u.ts_text)
  end
  if u.n > 0 then  -- (an increment by 0 would make the hash of a user that has none)
    redis.call('HINCRBY', ukey, 'n', u.n)
  end
  if user_ttl > 0 and u.kept then  -- an inactive user's state expires (popularity and
    redis.call('EXPIRE', ukey, user_ttl)  -- rows stay)
    redis.call('EXPIRE', ukey .. ':bought', user_ttl)
  end
  if u.kept then
    sequences[#sequences + 1] = user
    sequences[#sequences + 1] = u.seq
  end
end

if applied > 0 then
  redis.call('HINCRBY', prefix .. 'stats', 'applied', applied)
end

if meta_dirty then
  if landmark ~= nil then
    redis.call('HSET', meta_key, 'landmark_step', f17(landmark), 'max_ts', f17(max_ts))
  else
    redis.call('HSET', meta_key, 'max_ts', f17(max_ts))
  end
end

return {applied, below_wm, duplicates, late, hits, evaluations, sequences, erased, corrupted}
