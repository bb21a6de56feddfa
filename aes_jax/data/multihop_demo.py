"""A multi-hop QA demo corpus WRITTEN FOR THE PROJECT (not HotpotQA, 2Wiki or MuSiQue data,
none of which is available offline): a seeded small world of invented people, cities,
countries, universities, companies and products, one short passage per entity, and 2- to
4-hop questions whose answer needs facts from different passages, in HotpotQA's layout.

Facts: person -> birth city, birth year, university; city -> country; university -> city;
company -> founder, headquarters city, founding year; product -> maker. Questions:

    2 hops  In which city was the founder of {company} born?
            In which year was the founder of {company} born?
    3 hops  In which country was the founder of {company} born?
            In which country is the university {person} attended?
    4 hops  In which country was the founder of the company that makes {product} born?

Each question's context is its supporting passages (in hop order) plus distractors drawn
from the same world (HotpotQA's distractor setting, 10 passages in all); the whole
passage store is written too, for open retrieval. `extra["hops"]` keeps each hop's
passage title and the sentence of reasoning it licenses: what the oracle teacher writes.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from aes_jax.data.multihop import MultihopExample, Passage, write_hotpotqa

LABEL = ("project-written demo corpus (aes_jax.data.multihop_demo), an invented world; "
         "not HotpotQA / 2WikiMultiHopQA / MuSiQue data")
_ONSETS = ("b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z",
           "br", "dr", "kr", "st", "tr", "gl", "pl")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "ou")
_CODAS = ("", "n", "r", "s", "l", "m", "th", "nd", "rk")


@dataclasses.dataclass(frozen=True)
class WorldSize:
    countries: int = 24
    cities: int = 120
    universities: int = 60
    people: int = 900
    companies: int = 700
    products: int = 700


class _Names:
    """Unique invented words from a seeded syllable generator."""

    def __init__(self, rng: np.random.Generator):
        self.rng, self.used = rng, set()

    def word(self, syllables: int) -> str:
        while True:
            w = "".join(self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS)
                        + self.rng.choice(_CODAS) for _ in range(syllables))
            if w not in self.used:
                self.used.add(w)
                return w.capitalize()


def build_world(seed: int = 0, size: WorldSize = WorldSize()) -> dict:
    rng = np.random.default_rng(seed)
    names = _Names(rng)
    countries = [names.word(2) + "ia" for _ in range(size.countries)]
    cities = [{"name": names.word(2), "country": str(rng.choice(countries))}
              for _ in range(size.cities)]
    universities = [{"name": f"University of {names.word(2)}",
                     "city": cities[int(rng.integers(len(cities)))]["name"]}
                    for _ in range(size.universities)]
    people = [{"name": f"{names.word(1)} {names.word(2)}",
               "city": cities[int(rng.integers(len(cities)))]["name"],
               "year": int(rng.integers(1850, 1990)),
               "university": universities[int(rng.integers(len(universities)))]["name"],
               "job": str(rng.choice(["chemist", "engineer", "painter", "banker", "architect",
                                      "physician", "composer", "botanist"]))}
              for _ in range(size.people)]
    companies = [{"name": names.word(2) + str(rng.choice([" Works", " Ltd", " & Co", " Group"])),
                  "founder": people[int(rng.integers(len(people)))]["name"],
                  "city": cities[int(rng.integers(len(cities)))]["name"],
                  "year": int(rng.integers(1870, 2015))}
                 for _ in range(size.companies)]
    products = [{"name": "the " + names.word(2) + " " + str(rng.choice(
                    ["lamp", "engine", "camera", "bicycle", "radio", "clock", "stove"])),
                 "maker": companies[int(rng.integers(len(companies)))]["name"]}
                for _ in range(size.products)]
    return {"countries": countries, "cities": cities, "universities": universities,
            "people": people, "companies": companies, "products": products}


def _product_title(product: dict) -> str:
    return product["name"][len("the "):].title()  # "the Kascear radio" -> "Kascear Radio"


def passages_of(world: dict) -> dict[str, str]:
    """title -> passage text, one per entity (each states its own facts only)."""
    out = {}
    for c in world["cities"]:
        out[c["name"]] = f"{c['name']} is a city in {c['country']}, known for its markets."
    for u in world["universities"]:
        out[u["name"]] = f"The {u['name']} is a university located in {u['city']}."
    for p in world["people"]:
        article = "an" if p["job"][0] in "aeiou" else "a"
        out[p["name"]] = (f"{p['name']} was {article} {p['job']} born in {p['city']} in "
                          f"{p['year']}. {p['name'].split()[0]} studied at the "
                          f"{p['university']}.")
    for c in world["companies"]:
        out[c["name"]] = (f"{c['name']} is a company founded by {c['founder']} in {c['year']}, "
                          f"with its headquarters in {c['city']}.")
    for p in world["products"]:
        out[_product_title(p)] = f"T{p['name'][1:]} is a product made by {p['maker']}."
    return out


def _questions(world: dict, rng: np.random.Generator) -> list[dict]:
    person = {p["name"]: p for p in world["people"]}
    city = {c["name"]: c for c in world["cities"]}
    university = {u["name"]: u for u in world["universities"]}
    company = {c["name"]: c for c in world["companies"]}
    out = []
    for c in world["companies"]:
        f = person[c["founder"]]
        kind = int(rng.integers(3))
        hops = [(c["name"], f"{c['name']} was founded by {f['name']}."),
                (f["name"], f"{f['name']} was born in {f['city']} in {f['year']}.")]
        if kind == 0:
            q, a = f"In which city was the founder of {c['name']} born?", f["city"]
        elif kind == 1:
            q, a = f"In which year was the founder of {c['name']} born?", str(f["year"])
        else:
            country = city[f["city"]]["country"]
            hops.append((f["city"], f"{f['city']} is in {country}."))
            q, a = f"In which country was the founder of {c['name']} born?", country
        out.append({"question": q, "answer": a, "hops": hops, "type": f"{len(hops)}-hop"})
    for p in world["people"][: len(world["people"]) // 3]:
        u = university[p["university"]]
        country = city[u["city"]]["country"]
        out.append({"question": f"In which country is the university {p['name']} attended?",
                    "answer": country, "type": "3-hop",
                    "hops": [(p["name"], f"{p['name']} studied at the {u['name']}."),
                             (u["name"], f"The {u['name']} is in {u['city']}."),
                             (u["city"], f"{u['city']} is in {country}.")]})
    for prod in world["products"]:
        c = company[prod["maker"]]
        f = person[c["founder"]]
        country = city[f["city"]]["country"]
        out.append({"question": f"In which country was the founder of the company that makes "
                                f"{prod['name']} born?", "answer": country, "type": "4-hop",
                    "hops": [(_product_title(prod), f"T{prod['name'][1:]} is made by {c['name']}."),
                             (c["name"], f"{c['name']} was founded by {f['name']}."),
                             (f["name"], f"{f['name']} was born in {f['city']}."),
                             (f["city"], f"{f['city']} is in {country}.")]})
    return out


def demo_examples(seed: int = 0, size: WorldSize = WorldSize(), context_size: int = 10
                  ) -> tuple[list[MultihopExample], dict[str, str]]:
    """(examples in a seeded order, the passage store title -> text)."""
    rng = np.random.default_rng(seed + 1)
    world = build_world(seed, size)
    store = passages_of(world)
    titles = list(store)
    examples = []
    for i, q in enumerate(_questions(world, rng)):
        gold = [t for t, _ in q["hops"]]
        pool = [t for t in rng.choice(titles, size=context_size + len(gold), replace=False)
                if t not in gold][: max(context_size - len(gold), 0)]
        context = [Passage(t, store[t], True) for t in gold]
        context += [Passage(t, store[t], False) for t in pool]
        order = rng.permutation(len(context))
        examples.append(MultihopExample(
            id=f"demo-{i:05d}", question=q["question"], answer=q["answer"],
            passages=tuple(context[j] for j in order), source=f"multihop_demo:{i}",
            extra={"type": q["type"], "hops": [list(h) for h in q["hops"]]}))
    order = rng.permutation(len(examples))
    return [examples[j] for j in order], store


def write_demo_corpus(out_dir: str | Path, seed: int = 0, size: WorldSize = WorldSize(),
                      fractions: tuple[float, float] = (0.8, 0.1)) -> dict:
    """OUT/{train,dev,test}.json (HotpotQA layout), OUT/passages.jsonl ({"title", "text"}),
    OUT/README.md (what this is) and OUT/manifest.json (counts, seed, label)."""
    out = Path(out_dir)
    examples, store = demo_examples(seed, size)
    n_train = int(len(examples) * fractions[0])
    n_dev = int(len(examples) * fractions[1])
    splits = {"train": examples[:n_train], "dev": examples[n_train:n_train + n_dev],
              "test": examples[n_train + n_dev:]}
    for name, rows in splits.items():
        write_hotpotqa(out / f"{name}.json", rows)
    with open(out / "passages.jsonl", "w") as f:
        for title, text in store.items():
            f.write(json.dumps({"title": title, "text": text}) + "\n")
    manifest = {"corpus": LABEL, "seed": seed, "size": dataclasses.asdict(size),
                "passages": len(store), "questions": {k: len(v) for k, v in splits.items()},
                "hops": {t: sum(e.extra["type"] == t for e in examples)
                         for t in ("2-hop", "3-hop", "4-hop")}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    (out / "README.md").write_text(f"# Multi-hop demo corpus\n\n{LABEL}.\n\nWritten by "
                                   "`aes_jax.data.multihop_demo.write_demo_corpus`; the "
                                   "questions are in HotpotQA's JSON layout.\n")
    return manifest
