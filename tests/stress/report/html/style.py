"""The report page's stylesheet (inline: the page carries everything it needs).

Colours match `stress.report.html.svg.PALETTE`, so a status reads the same in a table and a
chart; the print rules keep figures and failures on one page each and drop the screen widths.
"""

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1100px;
padding:1rem 1.5rem;color:#212121;background:#fff}
h1{font-size:1.5rem;margin:.2rem 0}h2{font-size:1.2rem;border-bottom:1px solid #ddd;margin-top:1.6rem}
h3{font-size:1rem}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{border-bottom:1px solid #eee;padding:3px 6px;text-align:left;vertical-align:top}
table.kv th{width:11rem;color:#555;font-weight:600}
td.num{text-align:right;white-space:nowrap}
tr.failed td.st{color:#c62828;font-weight:700}tr.passed td.st{color:#2e7d32}
tr.skipped td.st{color:#757575}tr.lost td.st{color:#6a1b9a;font-weight:700}
.badge{font-size:.8rem;padding:2px 8px;border-radius:10px;color:#fff;vertical-align:middle}
.badge.passed{background:#2e7d32}.badge.failed{background:#c62828}.badge.lost{background:#6a1b9a}
.badge.skipped{background:#9e9e9e}
.banner{background:#fff8e1;border-left:4px solid #f9a825;padding:.4rem .6rem}
.banner.failed{background:#ffebee;border-color:#c62828}
.note{color:#555;font-size:13px}
figure{margin:1rem 0;break-inside:avoid}figcaption{font-size:13px;color:#333;margin-bottom:.3rem}
pre{background:#f6f8fa;padding:.5rem;overflow:auto;max-height:24rem;font-size:12px;white-space:pre-wrap;
word-break:break-all}
details{margin:.2rem 0}summary{cursor:pointer}
article.failure{border-left:3px solid #c62828;padding-left:.7rem;margin-bottom:1rem;break-inside:avoid}
footer{margin-top:2rem;color:#555;font-size:13px}
@media print{body{max-width:none;padding:0}pre{max-height:none}a{color:inherit}
details>summary{list-style:none}section{break-inside:auto}}
"""
