// The approval workflow in JavaScript (the same as `samples/approval`): a
// request that waits for a person's `decision` signal
// (`{"approved": true, "by": "ada"}`) for at most `timeout_ms`; without one
// it escalates (notifies `escalate_to`) and waits as long again, then gives
// up. The notifications are activities (`shop/main` `notify`, see
// `samples/shop`); a durable timer wakes the instance, which need not stay
// in memory while it waits.
//
//   quark deploy shop target/samples/shop.wasm
//   quark deploy approval-js target/samples/approval-js.wasm
//   quark workflow start approval-js --id r-7 '{"request": "new laptop", "approver": "ada", "escalate_to": "grace", "timeout_ms": 60000}'
//   quark workflow signal r-7 decision '{"approved": true, "by": "ada"}'

import { workflow, call, waitSignal, setStatus, nowMs, BadRequest, Rejected } from 'quark/workflow';

export const workflowRun = workflow((r) => {
  for (const field of ['request', 'approver', 'escalate_to']) {
    if (typeof r?.[field] !== 'string') throw new BadRequest(`bad request for the workflow's input: missing field \`${field}\``);
  }
  const seconds = (r.timeout_ms ?? 24 * 3600 * 1000) / 1000;
  const notifier = r.notifier ?? 'shop/main';
  const notify = (to, message) => call(notifier, 'notify', { to, message });

  notify(r.approver, `please decide on: ${r.request}`);
  for (const [round, asked] of [r.approver, r.escalate_to].entries()) {
    setStatus({ waiting_for: asked, since: nowMs() });
    const decision = waitSignal('decision', seconds);
    if (decision !== null) {
      return { request: r.request, approved: decision.approved, by: decision.by, escalated: round > 0 };
    }
    if (round === 0) notify(r.escalate_to, `${r.approver} did not decide on ${r.request} in time: please decide`);
  }
  throw new Rejected(`no decision on ${r.request} from ${r.approver} or ${r.escalate_to}`);
});
