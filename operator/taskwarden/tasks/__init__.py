"""The AgentTask controller: gather facts, run named pure checks, look the action up in a
table, act. Start reading at tasks/reconciler.py. Nothing is re-exported here, so that
importing a pure module (checks, transitions, explain) never loads a client.

    gather.py       the only reads a decision needs (index + the delegation chain)
    facts.py        Facts and Verdict (pure data)
    checks.py       the ordered chain of named pure checks           (pure)
    transitions.py  phase x verdict -> action, one table              (pure)
    explain.py      status patches, audit records, Event bodies       (pure)
    issue.py        issue / rotate / reissue / keep a credential      (acts)
    revoke.py       revoke, end, wait, settle, on deletion            (acts)
    sweep.py        orphaned credential Secrets                       (acts)
    scheduler.py    one heap of deadlines on an injected clock
    context.py      the services the actors share
    reconciler.py   locks, entry points, retries, dispatch
"""
