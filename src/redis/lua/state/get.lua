-- ARGV: a job id. Returns {d, m, s, p} (false each when there is none; s: a pending
-- workflow step's countdown, p: the latest progress report, see common.lua).
return {redis.call('HGET', P .. ':d', ARGV[1]), redis.call('HGET', P .. ':m', ARGV[1]),
        redis.call('HGET', P .. ':wf:s', ARGV[1]), redis.call('HGET', P .. ':prog', ARGV[1])}
