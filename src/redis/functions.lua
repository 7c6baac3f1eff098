#!lua name=wspush
-- wspush's Redis function library (docs/cluster.md). Every node loads it
-- when its link connects (FUNCTION LOAD REPLACE), so producers with only a
-- Redis client can push too:
--
--   FCALL wspush_push 0 CHANNEL JOB [NODE REF [MESSAGE_ID]]
--
-- JOB is a push or publish request without "op" (users, or topic, and
-- content; title, type, key as on the control socket). In one atomic step
-- the function takes the next seq of CHANNEL, stamps the time and
-- publishes "HEADER\nJOB" on CHANNEL, JOB byte for byte as given; every
-- node delivers it from its subscription. It returns the seq.

local function seq_key(channel)
  return 'wspush:' .. channel .. ':seq'
end

-- The channel's last RECENT messages by seq, for nodes that missed some.
local RECENT = 1024

local function recent_key(channel)
  return 'wspush:' .. channel .. ':recent'
end

local function push(keys, args)
  local channel, job = args[1], args[2]
  if not channel or channel == '' or not job then
    return redis.error_reply('usage: FCALL wspush_push 0 CHANNEL JOB [NODE REF [MESSAGE_ID]]')
  end
  local node, ref, id = args[3] or '', tonumber(args[4] or '0'), args[5]
  if not string.match(node, '^[%w_.-]*$') or not ref or ref < 0 then
    return redis.error_reply('wspush_push: bad NODE or REF')
  end
  if id and not string.match(id, '^[%w_.-]+$') then
    return redis.error_reply('wspush_push: bad MESSAGE_ID')
  end
  local ok, decoded = pcall(cjson.decode, job)
  if not ok or type(decoded) ~= 'table' then
    return redis.error_reply('wspush_push: the job is not a JSON object')
  end
  if decoded.content == nil then
    return redis.error_reply('wspush_push: the job has no "content"')
  end
  if decoded.topic ~= nil and type(decoded.topic) ~= 'string' then
    return redis.error_reply('wspush_push: "topic" must be a string')
  end
  if decoded.users ~= nil and type(decoded.users) ~= 'table' then
    return redis.error_reply('wspush_push: "users" must be a list of names')
  end
  local seq = redis.call('INCR', seq_key(channel))
  local time = redis.call('TIME')
  local ts = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  local header = string.format('{"seq":%d,"ts":%d,"node":"%s","ref":%d', seq, ts, node, ref)
  if id then
    header = header .. ',"id":"' .. id .. '"'
  end
  local payload = header .. '}\n' .. job
  redis.call('ZADD', recent_key(channel), seq, payload)
  redis.call('ZREMRANGEBYRANK', recent_key(channel), 0, -(RECENT + 1))
  redis.call('PUBLISH', channel, payload)
  return seq
end

-- FCALL wspush_range 0 CHANNEL FROM TO: the recent window's messages with
-- seqs FROM to TO, in seq order (those it still has).
local function range(keys, args)
  local from, to = tonumber(args[2] or ''), tonumber(args[3] or '')
  if not args[1] or not from or not to then
    return redis.error_reply('usage: FCALL wspush_range 0 CHANNEL FROM TO')
  end
  return redis.call('ZRANGEBYSCORE', recent_key(args[1]), from, to)
end

-- FCALL wspush_seed 0 CHANNEL SEQ: raise CHANNEL's counter to at least SEQ
-- (a node's highest seen), so that a Redis that lost its data never hands
-- out a seq again. Returns the counter.
local function seed(keys, args)
  local floor = tonumber(args[2] or '')
  if not args[1] or not floor then
    return redis.error_reply('usage: FCALL wspush_seed 0 CHANNEL SEQ')
  end
  local key = seq_key(args[1])
  local current = tonumber(redis.call('GET', key) or '0') or 0
  if current < floor then
    redis.call('SET', key, string.format('%d', floor))
    return floor
  end
  return current
end

-- FCALL wspush_lease 0 CHANNEL NODE TTL_MS: NODE is alive for TTL_MS more;
-- answers the nodes alive now, by name. The node that sorts first relays
-- plain PUBLISHed jobs (docs/cluster.md).
local function lease(keys, args)
  local ttl = tonumber(args[3] or '')
  if not args[1] or not args[2] or not ttl then
    return redis.error_reply('usage: FCALL wspush_lease 0 CHANNEL NODE TTL_MS')
  end
  local key = 'wspush:' .. args[1] .. ':nodes'
  local time = redis.call('TIME')
  local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  redis.call('ZADD', key, now + ttl, args[2])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  return redis.call('ZRANGE', key, 0, -1)
end

redis.register_function('wspush_push', push)
redis.register_function('wspush_lease', lease)
redis.register_function('wspush_seed', seed)
redis.register_function{function_name = 'wspush_range', callback = range, flags = {'no-writes'}}
