"""The order saga in Python: reserve the stock, charge the card, ship;
when a step fails, undo the ones before it in reverse order. An order of
more than `approve_above` waits for a person's `approved` signal first
(`{"ok": true}` or `{"ok": false}`), and is refused after `approve_within`
seconds without one. The activities are the methods of `samples/shop`.

    quark deploy shop target/samples/shop.wasm
    quark deploy order-saga-py target/samples/order-saga-py.wasm
    quark workflow start order-saga-py --id o-7 '{"order":"o-7","item":"book","amount":30}'
    quark workflow start order-saga-py --id o-8 '{"order":"o-8","item":"piano","amount":900}'
    quark workflow signal o-8 approved '{"ok":true}'
"""

from quark import QuarkError, Rejected, workflow


def run(order):
    shop = order.get("shop", "shop/main")
    ref = {"order": order["order"]}
    saga = workflow.Saga()
    try:
        workflow.set_status({"step": "reserve"})
        workflow.call(shop, "reserve", {"order": order["order"], "item": order["item"]})
        saga.on_failure(shop, "release", ref)

        if order["amount"] > order.get("approve_above", 500):
            workflow.set_status({"step": "approval"})
            decision = workflow.wait_signal("approved", timeout=order.get("approve_within", 3600))
            if decision is None or not decision.get("ok"):
                raise Rejected("not approved" if decision else "no approval in time")

        workflow.set_status({"step": "charge"})
        workflow.call(shop, "charge", {"order": order["order"], "amount": order["amount"]})
        saga.on_failure(shop, "refund", ref)

        workflow.set_status({"step": "ship"})
        workflow.call(shop, "ship", ref)
    except QuarkError as e:
        workflow.set_status({"step": "compensating"})
        failed = saga.compensate()
        raise Rejected(f"{e.message}; compensated" + (f", {len(failed)} compensations failed" if failed else ""))
    workflow.set_status({"step": "done"})
    return {"order": order["order"], "status": "shipped"}


WorkflowRun = workflow.export(run)
