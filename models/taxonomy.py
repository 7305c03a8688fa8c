"""The one list of what flexguard looks for.

Every other part (training labels, ONNX metadata, API responses, reports) reads the categories
from here, so adding or renaming a category is a one-place change.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Category:
    id: str
    name_en: str
    name_id: str
    description: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


CATEGORIES: tuple[Category, ...] = (
    Category(
        id="luxury_car",
        name_en="Luxury car",
        name_id="Mobil mewah",
        description="Supercars, sports cars and luxury cars (Ferrari, Porsche, Lamborghini, Rolls-Royce, ...).",
    ),
    Category(
        id="designer_bag",
        name_en="Designer bag",
        name_id="Tas bermerek",
        description="Bags and small leather goods of luxury houses (Louis Vuitton, Chanel, Hermès, Gucci, Dior, ...).",
    ),
    Category(
        id="jewelry_watch",
        name_en="Jewellery or luxury watch",
        name_id="Perhiasan atau jam tangan mewah",
        description="Luxury watches (Rolex, Patek Philippe, Cartier, ...) and fine jewellery.",
    ),
    Category(
        id="luxury_travel",
        name_en="Luxury travel",
        name_id="Wisata mewah",
        description="Yachts, private jets, luxury resorts and villas, upscale hotel rooms, famous foreign landmarks.",
    ),
)

CATEGORY_IDS: tuple[str, ...] = tuple(c.id for c in CATEGORIES)

# Photos that show none of the categories. Manifests may use it; it is not a model output.
ORDINARY = "ordinary"


def by_id(category_id: str) -> Category:
    for category in CATEGORIES:
        if category.id == category_id:
            return category
    raise KeyError(f"unknown category {category_id!r}; known: {', '.join(CATEGORY_IDS)}")
