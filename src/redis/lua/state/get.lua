-- ARGV: a job id. Returns {d, m} (false each when there is no such job).
return {redis.call('HGET', P .. ':d', ARGV[1]), redis.call('HGET', P .. ':m', ARGV[1])}
