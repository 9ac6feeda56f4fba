-- ARGV: a job id. Returns {d, m, s} (false each when there is no such job; s: a pending
-- workflow step's countdown, see common.lua).
return {redis.call('HGET', P .. ':d', ARGV[1]), redis.call('HGET', P .. ':m', ARGV[1]),
        redis.call('HGET', P .. ':wf:s', ARGV[1])}
