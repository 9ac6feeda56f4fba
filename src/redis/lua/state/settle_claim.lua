-- settle_claim: `settle` and `claim` (mode 'due') in one call, for a worker that settles
-- what its slots finished and takes their next jobs in one round trip. ARGV[1]: how many of
-- the arguments that follow are settle's (see settle.lua); the rest are claim's (see
-- claim.lua). Returns {settle's answer, claim's answer}. The settle runs first: jobs it puts
-- back due may be claimed by this very call (the claim reads the lanes after it).
local n = tonumber(ARGV[1])
-- (Copied by index: `unpack` takes at most about 8,000 values, fewer than a large chunk's.)
local settle_argv, claim_argv = {}, {}
for i = 2, n + 1 do settle_argv[i - 1] = ARGV[i] end
for i = n + 2, #ARGV do claim_argv[i - n - 1] = ARGV[i] end
return {run_settle(settle_argv), run_claim(claim_argv)}
