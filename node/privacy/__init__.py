"""Privacy: DP mechanisms, the budget ledger, the leakage guard and the Secret Sharer audit (DESIGN §3)."""
