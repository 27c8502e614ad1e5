#!/usr/bin/env python3
"""Expected results of a one-sided capture, from expect.py's view of the two-sided one.

    one_sided.py BOTH.json SIDE      (SIDE: the side that was kept, client or server)

A capture of one direction cannot show what only the other side says, so the expected session
keeps just what the kept side proves (the judgement of one-sided captures in docs/DESIGN.md):

  client kept  the mail went in the clear (verdict plaintext), its transactions, recipients and
               DATA commands are counted; nothing about the offer can be claimed (no finding)
  server kept  the EHLO reply is visible, so an overwritten STARTTLS is still starttls-stripped;
               nothing the client did (STARTTLS, MAIL) can be counted

Exits non-zero when the two-sided capture is not the delivery the scenario is meant to make.
"""
import json
import sys


def main():
    both = json.load(open(sys.argv[1]))
    side = sys.argv[2]
    [s] = both["sessions"]
    if side == "client":
        # smtp-source greets with HELO (so no offer is seen) and sends two transactions.
        assert not s["starttls_sent"] and not s["tls_started"], s
        assert s["mail_transactions"] == 2, s
        kept = {
            "server_port": s["server_port"],
            "missing_side": "server",
            "verdict": "plaintext",
            "findings": [],
            "starttls_sent": False,
            "tls_started": False,
            "mail_transactions": 2,
            "rcpt_commands": 4,
            "data_commands": 2,
        }
        counts = {}
    elif side == "server":
        # Postfix through the overwriting proxy: the stripped offer, mail in the clear.
        assert s["verdict"] == "starttls-stripped", s
        kept = {
            "server_port": s["server_port"],
            "missing_side": "client",
            "verdict": "starttls-stripped",
            "findings": ["starttls-stripped"],
            "starttls_offered": False,
            "starttls_sent": False,
            "mail_transactions": 0,
        }
        counts = {"starttls-stripped": 1}
    else:
        sys.exit(f"side is client or server, not {side!r}")
    both["sessions"] = [kept]
    both["finding_counts"] = counts
    print(json.dumps(both, indent=2))


if __name__ == "__main__":
    main()
