"""The README's model table, generated from the model cards (never typed twice).

``python -m kdzoo.zoo.cards_table --write README.md`` refreshes the block between
``<!-- models:start -->`` and ``<!-- models:end -->``.
"""

import re
import sys

from kdzoo.zoo import registry


def markdown_table():
    rows = ["| name | architecture | dataset | input | top-1 (%) | source of the figure |",
            "|---|---|---|---|---|---|"]
    for name, card in sorted(registry.cards().items()):
        aliases = f" (alias: {', '.join(card['aliases'])})" if card["aliases"] else ""
        top1 = "—" if card["top1"] is None else f"{card['top1']:.2f}".rstrip("0").rstrip(".")
        source = card["top1_source"] or "not reported"
        rows.append(f"| `{name}`{aliases} | {card['architecture']} | {card['dataset']} | "
                    f"{card['input_size']} | {top1} | {source} |")
    return "\n".join(rows) + "\n"


def write_into(path):
    text = open(path, encoding="utf-8").read()
    new, count = re.subn(r"(<!-- models:start -->\n).*?(<!-- models:end -->)",
                         lambda m: m.group(1) + markdown_table() + m.group(2), text, flags=re.S)
    if count != 1:
        raise ValueError(f"{path} needs exactly one <!-- models:start --> ... <!-- models:end --> block.")
    with open(path, "w", encoding="utf-8") as f:
        f.write(new)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--write":
        write_into(sys.argv[2])
    else:
        sys.stdout.write(markdown_table())
