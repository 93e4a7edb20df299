-- Apply one batch of normalised events to the online state, atomically.
--
-- Keys are derived from the prefix inside the script, so this needs a single Redis
-- node (or a primary with replicas). Under Redis Cluster the guarantee drops to
-- at-least-once; see README.
--
-- The result is a deterministic function of the events whatever the interleaving of
-- partitions: every shared update commutes. Markov rows keep exact weighted counts (the
-- top K is taken when reading, by count then item); popularity uses forward decay in whole
-- half-life steps, w * 2^(floor(ts / half_life) - landmark_step), so every term is a power
-- of two times the weight and float sums are exact in any order.
--
-- ARGV layout (built by streams/state.py):
--   1 prefix  2 sequence length L  3 (unused)  4 popularity half-life ms (0: none)
--   5 dedupe TTL s (0: off)  6 allowed lateness ms (<0: off)  7 watermark group
--   8 number of partition blocks, then per block:
--     topic, partition, n, then n x (offset, event_id, user_id, item_id, type, ts, weight)
-- Returns {applied, below_watermark, duplicates, late, online_hits, online_evaluations,
-- {user, packed sequence, ...} of the users this batch changed}:
-- an event that moves a user to a new item is an online evaluation of the list last served
-- to that user (sr:served:{user}, packed indexes, written by serving; read only here), and
-- a hit when its item was in that list.

local prefix = ARGV[1]
local L = tonumber(ARGV[2])
local half_life = tonumber(ARGV[4])
local dedupe_ttl = tonumber(ARGV[5])
local lateness = tonumber(ARGV[6])
local group = ARGV[7]
local nblocks = tonumber(ARGV[8])

local idx_key = prefix .. 'item:idx'
local ids_key = prefix .. 'item:ids'
local pop_key = prefix .. 'pop'
local meta_key = prefix .. 'pop:meta'
local total_key = prefix .. 'mk:total'

local applied, below_wm, duplicates, late, hits, evaluations = 0, 0, 0, 0, 0, 0

local meta = redis.call('HMGET', meta_key, 'landmark_step', 'max_ts')
local landmark = tonumber(meta[1])
local max_ts = tonumber(meta[2])
local meta_dirty = false

local function f17(x)
  return string.format('%.17g', x)
end

local function item_index(item)
  local idx = redis.call('HGET', idx_key, item)
  if idx then
    return tonumber(idx)
  end
  local n = redis.call('RPUSH', ids_key, item)
  redis.call('HSET', idx_key, item, n - 1)
  return n - 1
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
    redis.call('ZINCRBY', pop_key, f17(w), idx)
    return
  end
  local step = math.floor(ts / half_life)
  if landmark == nil then
    landmark = step
    meta_dirty = true
  end
  local e = step - landmark
  if e > 512 then
    local shift = e
    redis.call('ZUNIONSTORE', pop_key, 1, pop_key, 'WEIGHTS', f17(2 ^ (-shift)))
    landmark = landmark + shift
    meta_dirty = true
    e = e - shift
  end
  redis.call('ZINCRBY', pop_key, f17(w * 2 ^ e), idx)
end

local touched = {}
local touched_list = {}

local function apply(user, item, etype, ts_text, w)
  local ts = tonumber(ts_text)
  if not touched[user] then
    touched[user] = true
    touched_list[#touched_list + 1] = user
  end
  local c = item_index(item)
  add_popularity(c, w, ts)
  local ukey = prefix .. 'u:' .. user
  if etype == 'purchase' then
    redis.call('SADD', ukey .. ':bought', c)
  end
  redis.call('HINCRBY', ukey, 'n', 1)
  local u = redis.call('HMGET', ukey, 'seq', 'ts')
  local seq = u[1] or ''
  local user_ts = tonumber(u[2])
  if lateness >= 0 and user_ts ~= nil and user_ts - ts > lateness then
    late = late + 1
    return
  end
  if user_ts == nil or ts > user_ts then
    redis.call('HSET', ukey, 'ts', ts_text)
  end
  local last = nil
  if #seq >= 4 then
    last = struct.unpack('<I4', seq, #seq - 3)
  end
  if last == c then
    return -- a repeat of the item just seen (view -> click -> purchase) moves nothing
  end
  local served = redis.call('GET', prefix .. 'served:' .. user)
  if served then
    evaluations = evaluations + 1
    for pos = 1, #served - 3, 4 do
      if struct.unpack('<I4', served, pos) == c then
        hits = hits + 1
        break
      end
    end
  end
  if last ~= nil then
    local row = prefix .. 'mk:' .. last
    redis.call('ZINCRBY', row, f17(w), c)
    redis.call('HINCRBYFLOAT', total_key, last, f17(w))
  end
  seq = seq .. struct.pack('<I4', c)
  if #seq > 4 * L then
    seq = string.sub(seq, #seq - 4 * L + 1)
  end
  redis.call('HSET', ukey, 'seq', seq)
end

local i = 9
for _ = 1, nblocks do
  local topic, partition, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  i = i + 3
  local wm_key = prefix .. 'wm:' .. group .. ':' .. topic .. ':' .. partition
  local wm = tonumber(redis.call('GET', wm_key) or '-1')
  local high = wm
  local high_text = nil
  for _ = 1, n do
    local offset = tonumber(ARGV[i])
    -- At or below the watermark: a redelivery, unless dedupe is on and its event_id was
    -- never seen, which means the log was reset (a broker that lost its data): apply.
    if offset <= wm and (dedupe_ttl <= 0 or
        redis.call('EXISTS', prefix .. 'dedupe:' .. ARGV[i + 1]) == 1) then
      below_wm = below_wm + 1
    else
      if offset > high then
        high = offset
        high_text = ARGV[i]
      end
      local fresh = true
      if dedupe_ttl > 0 then
        fresh = redis.call('SET', prefix .. 'dedupe:' .. ARGV[i + 1], '1', 'NX', 'EX', dedupe_ttl)
      end
      if fresh then
        apply(ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], tonumber(ARGV[i + 6]))
        applied = applied + 1
      else
        duplicates = duplicates + 1
      end
    end
    i = i + 7
  end
  if high_text ~= nil then
    redis.call('SET', wm_key, high_text)
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

local sequences = {}
for _, user in ipairs(touched_list) do
  sequences[#sequences + 1] = user
  sequences[#sequences + 1] = redis.call('HGET', prefix .. 'u:' .. user, 'seq') or ''
end

return {applied, below_wm, duplicates, late, hits, evaluations, sequences}
