"""stress.run: executing the planned tests of a run through `cc_executor.client`.

    plan            suites -> the planned tests of a run (filter, template, requirements)
    planned         `Planned`, `RunOptions`: what the runner is given
    runner          the `Runner` loop: stop rules (interrupt, --fail-fast, --halt), dispatching
    execution       one attempt of a case: the request, the event consumer, the guards
    observed        what an attempt saw (`Observed`), which run it is (`CaseRun`)
    attempt_record  judging an attempt into its `Attempt` record
    instances       K concurrent instances of one test and the best-response pick
    instance_runs   running the K instances of one attempt
    flaky           repeats: stable pass / stable fail / flaky, pass thresholds, --halt rules
    outcomes        a test's attempts folded into its `Outcome`
    leftovers       ending processes a job left behind, by their tag

Glossary: a *test* is an entry of a suite; a *case* one expansion of a test; an *attempt* one run
of a case (repeats, retries); an *instance* one of K concurrent runs of an instances test.

Reaches the service only through `cc_executor.client` (and the shared libraries `protocol`,
`load`, `timing`, `aio`, `claude_cli`); imports `stress.suite` and `stress.report.results`, never
`stress.cli`, `stress.session` or `stress.service`.
"""
