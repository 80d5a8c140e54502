"""Synthetic e-commerce dataset in the docs/DATA.md layout, with a *planted* social effect.

Why synthetic data at all: tests, demos and benchmarks need a dataset that exists on every machine,
is small enough to train on in seconds and has a known structure, so that "the social blend helps"
is a measurable claim instead of a hope. The generative story:

* items belong to ~10 categories, carry readable titles built from per-category word lists, and
  have Zipf-like popularity inside their category;
* users belong to communities; a community has a taste prototype (a few favourite categories plus
  its own preferences among the items of those categories) and each user mixes 2-3 categories,
  mostly the community's, with Dirichlet weights;
* friendships form mostly inside communities (homophily), so friends share taste;
* on top of their own taste, users adopt items their friends clicked, carted or bought. That part
  of behaviour cannot be predicted from a user's own history, only from the friends' — it is the
  effect a socially blended model must recover;
* each engagement runs through a view → click → cart → purchase funnel, sometimes followed by a
  1-5 rating, with increasing unix timestamps.

Everything is drawn from one `numpy.random.Generator(seed)`, and no Python `set`/`dict` of strings
decides an order, so the same seed writes byte-identical files.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# name -> (makers, adjectives, nouns, tags): titles read like "Northpeak Waterproof Hiking Boots".
CATEGORIES: dict[str, tuple[tuple[str, ...], ...]] = {
    "electronics": (
        ("Voltix", "Nimbus", "Arcwave", "Lumen", "Quanta"),
        ("Wireless", "Noise-Cancelling", "Portable", "Smart", "4K", "Bluetooth", "Compact"),
        ("Headphones", "Speaker", "Charger", "Webcam", "Monitor", "Keyboard", "Smartwatch",
         "Power Bank", "Earbuds", "Streaming Stick"),
        ("gadgets", "audio", "wireless", "home-office", "gaming", "mobile", "smart-home"),
    ),
    "books": (
        ("Lantern Press", "Harbor House", "Quill & Ink", "Bluebird Books", "Atlas"),
        ("Illustrated", "Hardcover", "Paperback", "Annotated", "Bestselling", "Collector's"),
        ("Mystery Novel", "Cookbook", "Travel Guide", "Science Fiction Anthology", "Biography",
         "Poetry Collection", "History of Rome", "Fantasy Saga", "Self-Help Guide",
         "Children's Picture Book"),
        ("fiction", "non-fiction", "bestseller", "gift", "reading", "classic", "kids"),
    ),
    "kitchen": (
        ("Copperline", "ChefCraft", "Hearth & Co", "Saltbox", "Brightpan"),
        ("Stainless Steel", "Cast Iron", "Non-Stick", "Ceramic", "Bamboo", "Professional"),
        ("Chef Knife", "Frying Pan", "Dutch Oven", "Cutting Board", "Espresso Maker",
         "Mixing Bowl Set", "Measuring Cups", "Saucepan", "Kettle", "Spice Rack"),
        ("cooking", "baking", "cookware", "coffee", "dishwasher-safe", "gift", "essentials"),
    ),
    "outdoor": (
        ("Northpeak", "Trailhead", "Summit Gear", "Wildpine", "Ridgeline"),
        ("Waterproof", "Lightweight", "Insulated", "Ultralight", "All-Season", "Packable"),
        ("Hiking Boots", "Tent", "Sleeping Bag", "Backpack", "Rain Jacket", "Headlamp",
         "Trekking Poles", "Camping Stove", "Water Filter", "Hammock"),
        ("camping", "hiking", "travel", "waterproof", "adventure", "backpacking", "survival"),
    ),
    "toys": (
        ("Brightblock", "Playnest", "Tinker Tots", "Wonderbox", "Kidora"),
        ("Wooden", "Educational", "Remote-Control", "Plush", "Magnetic", "Glow-in-the-Dark"),
        ("Building Blocks", "Puzzle", "Race Car", "Teddy Bear", "Train Set", "Dollhouse",
         "Science Kit", "Board Game", "Robot", "Kite"),
        ("kids", "toddler", "stem", "family", "gift", "creative", "outdoor-play"),
    ),
    "beauty": (
        ("Lumiere", "Pure Petal", "Glowlab", "Velour", "Aquaveil"),
        ("Hydrating", "Organic", "Fragrance-Free", "Vitamin C", "Matte", "Overnight"),
        ("Face Serum", "Moisturizer", "Lip Balm", "Shampoo", "Sunscreen", "Eye Cream",
         "Face Mask", "Body Lotion", "Cleanser", "Hair Oil"),
        ("skincare", "haircare", "vegan", "cruelty-free", "sensitive-skin", "spa", "daily"),
    ),
    "fashion": (
        ("Urban Thread", "Linen & Loom", "Monarch", "Driftwood", "Velvet Fox"),
        ("Slim-Fit", "Oversized", "Vintage", "Wool", "Denim", "Classic"),
        ("Jacket", "Sneakers", "Scarf", "Jeans", "T-Shirt", "Dress", "Sweater", "Belt",
         "Sunglasses", "Handbag"),
        ("streetwear", "casual", "formal", "winter", "summer", "unisex", "accessories"),
    ),
    "sports": (
        ("Apex", "Stride", "Ironcore", "Velocity", "Peakform"),
        ("Adjustable", "Breathable", "Pro", "Anti-Slip", "High-Density", "Quick-Dry"),
        ("Running Shoes", "Yoga Mat", "Dumbbell Set", "Resistance Bands", "Tennis Racket",
         "Cycling Helmet", "Jump Rope", "Football", "Gym Bag", "Foam Roller"),
        ("fitness", "running", "yoga", "training", "team-sports", "cycling", "home-gym"),
    ),
    "garden": (
        ("Greenthumb", "Fernwood", "Bloomfield", "Rootstock", "Meadowlark"),
        ("Heavy-Duty", "Ergonomic", "Solar", "Raised", "Self-Watering", "Weatherproof"),
        ("Garden Hose", "Pruning Shears", "Planter", "Seed Starter Kit", "Lawn Mower",
         "Bird Feeder", "Compost Bin", "Watering Can", "String Lights", "Wheelbarrow"),
        ("gardening", "lawn", "plants", "outdoor-living", "eco", "seasonal", "tools"),
    ),
    "music": (
        ("Resonance", "Tonewood", "Echo Hall", "Bassline", "Harmonia"),
        ("Acoustic", "Electric", "Vintage", "Studio", "Beginner", "Limited Edition"),
        ("Guitar", "Vinyl Record", "Ukulele", "Keyboard Piano", "Microphone", "Drum Pad",
         "Guitar Strings", "Audio Interface", "Violin", "Metronome"),
        ("instruments", "recording", "vinyl", "beginner", "studio", "live", "jazz"),
    ),
}
CATEGORY_NAMES: tuple[str, ...] = tuple(CATEGORIES)

START_TIME = 1_700_000_000  # a fixed epoch keeps files byte-identical across runs
SPAN_S = 180 * 86_400
EVENTS = ("view", "click", "cart", "purchase", "rate")

ZIPF_EXPONENT = 1.05  # popularity inside a category
COMMUNITY_SIZE = 30  # users per community on average
TILT_SIGMA = 1.0  # how much a community's item preferences differ from plain popularity
EXPLORE = 0.08  # share of own-taste engagements drawn from global popularity
P_IN_COMMUNITY = 0.85  # chance a new friendship stays inside the community
P_COLD = 0.05  # users with friends but no history
P_ISOLATED = 0.03  # users with history but no friends
ACTIVITY = 18.0  # median own-taste engagements per user
SOCIAL_SHARE = 0.45  # social engagements per own engagement (binomial rate)
# how strongly a friend's view / click / cart / purchase spreads to the user
DEPTH_INFLUENCE = np.array([0.0, 1.0, 2.0, 4.0])


@dataclass(frozen=True, slots=True)
class SynthSummary:
    """What was written, so the CLI can print it and tests can check it."""

    users: int
    items: int
    interactions: int
    friend_edges: int
    users_without_history: int
    isolated_users: int


@dataclass(frozen=True, slots=True)
class _Catalog:
    category: np.ndarray  # item -> category index
    popularity: np.ndarray  # item -> unnormalised Zipf weight inside its category
    titles: list[str]
    tags: list[str]


@dataclass(frozen=True, slots=True)
class _Population:
    community: np.ndarray  # user -> community index
    taste: np.ndarray  # user x category mixture weights (rows sum to 1)
    activity: np.ndarray  # user -> number of own-taste engagements (0 for cold users)


@dataclass(frozen=True, slots=True)
class _Engagements:
    """One row per (user, item) encounter; the funnel turns each into 1+ events."""

    user: np.ndarray
    item: np.ndarray
    time: np.ndarray  # float seconds
    depth: np.ndarray  # 0 view, 1 click, 2 cart, 3 purchase

    def __len__(self) -> int:
        return len(self.user)

    def concat(self, other: _Engagements) -> _Engagements:
        return _Engagements(*(np.concatenate([getattr(self, f), getattr(other, f)])
                              for f in ("user", "item", "time", "depth")))


# ---------------------------------------------------------------- catalogue


def _item_titles(rng: np.random.Generator, words: tuple[tuple[str, ...], ...], n: int) -> list[str]:
    """Distinct maker/adjective/noun combinations in random order; a numbered series only once
    the combinations run out, so small catalogues never repeat a title."""
    makers, adjectives, nouns, _ = words
    combos = [f"{m} {a} {o}" for m in makers for a in adjectives for o in nouns]
    order = rng.permutation(len(combos))
    titles = [combos[order[k % len(combos)]] for k in range(n)]
    return [t if k < len(combos) else f"{t} Series {k // len(combos) + 1}"
            for k, t in enumerate(titles)]


def _item_tags(rng: np.random.Generator, pool: tuple[str, ...], n: int) -> list[str]:
    counts = rng.integers(2, 5, size=n)
    return [";".join(sorted(rng.choice(pool, size=c, replace=False))) for c in counts]


def _make_catalog(rng: np.random.Generator, n_items: int) -> _Catalog:
    """Uneven category sizes, Zipf popularity inside each category."""
    n_cat = len(CATEGORY_NAMES)
    share = rng.dirichlet(np.full(n_cat, 8.0))
    category = np.concatenate([np.arange(n_cat), rng.choice(n_cat, n_items - n_cat, p=share)])
    category = category[rng.permutation(n_items)]
    popularity = np.empty(n_items)
    titles: list[str] = [""] * n_items
    tags: list[str] = [""] * n_items
    for c, name in enumerate(CATEGORY_NAMES):
        members = np.flatnonzero(category == c)
        ranks = rng.permutation(len(members))
        popularity[members] = 1.0 / (ranks + 1.0) ** ZIPF_EXPONENT
        for k, (title, tag) in enumerate(zip(_item_titles(rng, CATEGORIES[name], len(members)),
                                             _item_tags(rng, CATEGORIES[name][3], len(members)),
                                             strict=True)):
            titles[members[k]], tags[members[k]] = title, tag
    return _Catalog(category=category, popularity=popularity, titles=titles, tags=tags)


# ---------------------------------------------------------------- users


def _community_prototypes(rng: np.random.Generator, n_comm: int) -> np.ndarray:
    """Each community favours 3 categories with Dirichlet weights (n_comm x n_cat)."""
    n_cat = len(CATEGORY_NAMES)
    proto = np.zeros((n_comm, n_cat))
    for c in range(n_comm):
        favourites = rng.choice(n_cat, size=3, replace=False)
        proto[c, favourites] = rng.dirichlet(np.full(3, 1.5))
    return proto


def _user_tastes(rng: np.random.Generator, community: np.ndarray, proto: np.ndarray) -> np.ndarray:
    """A Dirichlet mixture over 2-3 categories, mostly the community's, sometimes one personal
    outsider category — friends share taste, but not identically."""
    n_users, n_cat = len(community), proto.shape[1]
    taste = np.zeros((n_users, n_cat))
    for u in range(n_users):
        k = int(rng.integers(2, 4))
        cats = rng.choice(n_cat, size=k, replace=False, p=proto[community[u]])
        if rng.random() < 0.3:
            cats[-1] = rng.integers(n_cat)
        np.add.at(taste[u], cats, rng.dirichlet(np.full(k, 2.0)))
    return taste


def _make_population(rng: np.random.Generator, n_users: int, activity: float) -> _Population:
    n_comm = int(np.clip(n_users // COMMUNITY_SIZE, 2, 400))
    community = rng.choice(n_comm, size=n_users, p=rng.dirichlet(np.full(n_comm, 5.0)))
    taste = _user_tastes(rng, community, _community_prototypes(rng, n_comm))
    engagements = np.rint(rng.lognormal(np.log(activity), 0.8, n_users))
    return _Population(community=community, taste=taste,
                       activity=np.clip(engagements, 3, 400).astype(np.int64))


# ---------------------------------------------------------------- friendships


def _make_friendships(rng: np.random.Generator, community: np.ndarray,
                      isolated: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Undirected pairs (a < b) with tie weights in (0, 1]; most friendships, and the strongest
    ties, stay inside a community — that is what makes friends share taste."""
    n_users = len(community)
    social = np.flatnonzero(~isolated)
    src = np.repeat(social, rng.geometric(0.35, size=len(social)))
    dst = social[rng.integers(len(social), size=len(src))]
    by_comm = social[np.argsort(community[social], kind="stable")]
    bounds = np.searchsorted(community[by_comm], np.arange(community.max() + 2))
    inside = rng.random(len(src)) < P_IN_COMMUNITY
    lo, hi = bounds[community[src]], bounds[community[src] + 1]
    pick = lo + np.floor(rng.random(len(src)) * (hi - lo)).astype(np.int64)
    dst = np.where(inside, by_comm[pick], dst)
    a, b = np.minimum(src, dst), np.maximum(src, dst)
    codes = np.unique((a * n_users + b)[a != b])
    a, b = codes // n_users, codes % n_users
    same = community[a] == community[b]
    weight = np.where(same, rng.beta(4.0, 2.0, len(codes)), rng.beta(2.0, 4.0, len(codes)))
    return a, b, np.clip(np.round(weight, 3), 0.001, 1.0)


def _directed(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, ...]:
    """Both directions of every friendship, sorted by source then target."""
    src, dst, wt = np.concatenate([a, b]), np.concatenate([b, a]), np.concatenate([w, w])
    order = np.lexsort((dst, src))
    return src[order], dst[order], wt[order]


# ---------------------------------------------------------------- behaviour


def _sample_categories(rng: np.random.Generator, taste: np.ndarray) -> np.ndarray:
    """One category per row of `taste` (rows are probability vectors)."""
    cdf = np.cumsum(taste, axis=1)
    return (cdf < rng.random((len(taste), 1)) * cdf[:, -1:]).sum(axis=1).clip(0, taste.shape[1] - 1)


def _own_items(rng: np.random.Generator, users: np.ndarray, pop: _Population,
               cat: _Catalog) -> np.ndarray:
    """Items from each user's own taste: category from the mixture, item from the community's
    tilted popularity inside it; a small share from global popularity."""
    n_cat = len(CATEGORY_NAMES)
    chosen = _sample_categories(rng, pop.taste[users])
    key = pop.community[users] * n_cat + chosen
    items = np.empty(len(users), dtype=np.int64)
    for k in np.unique(key):
        rows = np.flatnonzero(key == k)
        members = np.flatnonzero(cat.category == k % n_cat)
        w = cat.popularity[members] * rng.lognormal(0.0, TILT_SIGMA, len(members))
        items[rows] = rng.choice(members, size=len(rows), p=w / w.sum())
    explore = np.flatnonzero(rng.random(len(users)) < EXPLORE)
    items[explore] = rng.choice(len(cat.category), size=len(explore),
                                p=cat.popularity / cat.popularity.sum())
    return items


def _funnel_depth(rng: np.random.Generator, n: int, p_click: float) -> np.ndarray:
    """How far each engagement went: many views, fewer clicks, carts and purchases."""
    r = rng.random((n, 3))
    click = r[:, 0] < p_click
    cart = click & (r[:, 1] < 0.35)
    buy = cart & (r[:, 2] < 0.55)
    return click.astype(np.int64) + cart + buy


def _own_engagements(rng: np.random.Generator, pop: _Population, cat: _Catalog) -> _Engagements:
    users = np.repeat(np.arange(len(pop.activity)), pop.activity)
    items = _own_items(rng, users, pop, cat)
    time = START_TIME + rng.random(len(users)) * SPAN_S
    return _Engagements(users, items, time, _funnel_depth(rng, len(users), 0.4))


def _social_engagements(rng: np.random.Generator, own: _Engagements,
                        edges: tuple[np.ndarray, ...], activity: np.ndarray) -> _Engagements:
    """Users adopt what their friends engaged with deeply (clicked, carted, bought), weighted by
    tie strength, some days after the friend did — behaviour only the friends explain."""
    src, dst, wt = edges
    by_user = np.argsort(own.user, kind="stable")
    bounds = np.searchsorted(own.user[by_user], np.arange(len(activity) + 1))
    starts = np.searchsorted(src, np.arange(len(activity) + 1))
    picked: list[np.ndarray] = []
    adopters: list[np.ndarray] = []
    for u in np.flatnonzero(activity > 0):
        friends, ties = dst[starts[u]:starts[u + 1]], wt[starts[u]:starts[u + 1]]
        if len(friends) == 0:
            continue
        pool = np.concatenate([by_user[bounds[f]:bounds[f + 1]] for f in friends])
        tie = np.repeat(ties, bounds[friends + 1] - bounds[friends])
        p = tie * DEPTH_INFLUENCE[own.depth[pool]]
        n = rng.binomial(activity[u], SOCIAL_SHARE)
        if n == 0 or p.sum() <= 0:
            continue
        picked.append(rng.choice(pool, size=n, p=p / p.sum()))
        adopters.append(np.full(n, u))
    source = np.concatenate(picked) if picked else np.zeros(0, dtype=np.int64)
    users = np.concatenate(adopters) if adopters else np.zeros(0, dtype=np.int64)
    time = own.time[source] + rng.exponential(3 * 86_400.0, len(source))
    return _Engagements(users, own.item[source], time, _funnel_depth(rng, len(source), 0.6))


def _events(rng: np.random.Generator, eng: _Engagements) -> list[tuple[str, str, str, str, int]]:
    """Expand engagements into funnel events with increasing timestamps, oldest first."""
    n = len(eng)
    offsets = np.cumsum(rng.uniform([5, 30, 60], [300, 1800, 3600], size=(n, 3)), axis=1)
    second_view = rng.random(n) < 0.25
    rated = (eng.depth == 3) & (rng.random(n) < 0.35)
    stars = rng.choice(np.arange(1, 6), size=n, p=[0.05, 0.07, 0.15, 0.33, 0.40])
    rate_at = offsets[:, 2] + rng.uniform(86_400, 10 * 86_400, n)
    revisit = rng.exponential(86_400.0, n)
    parts = [(np.arange(n), 0, np.zeros(n), 0), (np.flatnonzero(second_view), 0, revisit, 0)]
    parts += [(np.flatnonzero(eng.depth >= d), d, offsets[:, d - 1], 0) for d in (1, 2, 3)]
    parts.append((np.flatnonzero(rated), 4, rate_at, 1))
    idx = np.concatenate([p[0] for p in parts])
    kind = np.concatenate([np.full(len(p[0]), p[1]) for p in parts])
    when = np.concatenate([(eng.time + p[2])[p[0]] for p in parts]).astype(np.int64)
    value = np.concatenate([np.full(len(p[0]), p[3]) for p in parts]) * stars[idx]
    order = np.argsort(when, kind="stable")
    return [(f"u{eng.user[i]:04d}", f"p{eng.item[i]:05d}", EVENTS[k], str(v) if v else "", t)
            for i, k, v, t in zip(idx[order], kind[order], value[order], when[order], strict=True)]


# ---------------------------------------------------------------- output


def _write_csv(path: Path, header: tuple[str, ...], rows: Iterable[Sequence[object]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _pick(rng: np.random.Generator, candidates: np.ndarray, share: float,
          n_users: int) -> np.ndarray:
    """A boolean mask over users selecting about `share` of them among `candidates`."""
    mask = np.zeros(n_users, dtype=bool)
    k = min(len(candidates), round(share * n_users))
    mask[rng.choice(candidates, size=k, replace=False)] = True
    return mask


def write_synthetic_dataset(out_dir: Path, n_users: int = 600, n_items: int = 1200,
                            seed: int = 0, activity: float = ACTIVITY) -> SynthSummary:
    """Write interactions.csv, social.csv and items.csv into `out_dir` and say what was written.
    `activity`: the median number of a user's own-taste engagements (each becomes one or more
    events, and friends add about half as many again)."""
    if n_users < 10 or n_items < len(CATEGORY_NAMES):
        raise ValueError(f"need at least 10 users and {len(CATEGORY_NAMES)} items, "
                         f"got {n_users} users and {n_items} items")
    if not 1.0 <= activity <= 400.0:
        raise ValueError(f"activity {activity} must be between 1 and 400")
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    catalog = _make_catalog(rng, n_items)
    pop = _make_population(rng, n_users, activity)
    isolated = _pick(rng, np.arange(n_users), P_ISOLATED, n_users)
    a, b, w = _make_friendships(rng, pop.community, isolated)
    has_friends = np.zeros(n_users, dtype=bool)
    has_friends[np.concatenate([a, b])] = True
    cold = _pick(rng, np.flatnonzero(has_friends), P_COLD, n_users)
    pop = _Population(pop.community, pop.taste, np.where(cold, 0, pop.activity))
    edges = _directed(a, b, w)
    own = _own_engagements(rng, pop, catalog)
    social = _social_engagements(rng, own, edges, pop.activity)
    events = _events(rng, own.concat(social))
    _write_csv(out_dir / "interactions.csv", ("user_id", "item_id", "event", "value", "timestamp"),
               events)
    _write_csv(out_dir / "social.csv", ("user_id", "friend_id", "weight"),
               [(f"u{s:04d}", f"u{d:04d}", f"{x:.3f}") for s, d, x in zip(*edges, strict=True)])
    _write_csv(out_dir / "items.csv", ("item_id", "title", "category", "tags"),
               [(f"p{i:05d}", catalog.titles[i], CATEGORY_NAMES[catalog.category[i]],
                 catalog.tags[i]) for i in range(n_items)])
    return SynthSummary(users=int(np.count_nonzero(has_friends | (pop.activity > 0))),
                        items=n_items, interactions=len(events), friend_edges=len(edges[0]),
                        users_without_history=int(np.count_nonzero(has_friends & cold)),
                        isolated_users=int(np.count_nonzero(~has_friends & (pop.activity > 0))))
