"""The text-in-photo benchmark's data: photos whose meaning is their text, drawn deterministically.

`make_samples(n, seed)` writes nothing: it decides every sample (category, lines, fonts, sizes,
orientation, queries) from a seeded generator. `render(sample, out_dir, backgrounds)` draws one:

- screenshots (chats, notes, lists, appointments, passwords): a 1080 x 2340 phone screen, PNG;
- paper (receipts, tickets, documents, prescriptions) and signs, posters, plates: drawn flat, then
  pasted onto a shared photo (flickr8k *train* photos, never in the benchmark's pool) with a
  perspective warp, blur and JPEG noise, as a phone photographs them; documents are sometimes a
  flat scan instead;
- orientation: most upright; some turned by 90, 180 or 270 degrees in the pixels, and some stored
  sideways with an EXIF orientation tag (the way a phone saves a photo taken held sideways).

Each of the 25 categories has its paraphrase queries (words that are not in its text: "bakery
bill" for a receipt of croissants); each sample has unique names and codes, queried by exact words
("Moreau", "gate K47") and by substrings of them ("RE16" of "RE16 TGK", "0193" of an invoice
number). Fonts: Debian's fonts-dejavu, fonts-liberation and fonts-freefont, else matplotlib's DejaVu.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

FONT_GLOBS = [
    "/usr/share/fonts/truetype/dejavu/DejaVu*.ttf",
    "/usr/share/fonts/truetype/liberation/Liberation*.ttf",
    "/usr/share/fonts/truetype/freefont/Free*.ttf",
]
STATUS_BAR = "9:41 5G 87%"  # drawn at the top of every screenshot
EXCLUDE_FONTS = ("Math", "ExtraLight", "Oblique", "Italic", "Symbol")  # unreadable or hardly text


def fonts() -> list[str]:
    """The font files to draw with, sorted (the same list on every run on one machine)."""
    found = sorted(
        f for pattern in FONT_GLOBS for f in glob.glob(pattern) if not any(x in os.path.basename(f) for x in EXCLUDE_FONTS)
    )
    if not found:  # matplotlib ships DejaVu
        import matplotlib

        mpl = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf"
        found = sorted(str(p) for p in mpl.glob("DejaVu*.ttf") if not any(x in p.name for x in EXCLUDE_FONTS))
    return found


SURNAMES = """Moreau Laurent Girard Bonnet Dupont Lambert Fontaine Rousseau Vincent Muller Lefevre Faure Andre
Mercier Blanc Guerin Boyer Garnier Chevalier Legrand Gauthier Perrin Robin Clement Morin Nicolas Henry Roussel
Mathieu Gautier Masson Marchand Duval Denis Dumont Marie Lemaire Noel Meyer Dufour Meunier Brun Blanchard
Giraud Joly Riviere Lucas Brunet Gaillard Barbier Arnaud Martinez Gerard Roche Renard Schmitt Roy Leroux
Colin Vidal Caron Picard Roger Fabre Aubert Lemoine Renaud Dumas Lacroix Olivier Philippe Bourgeois Pierre
Benoit Rey Leclerc Payet Rolland Leclercq Guillaume Lecomte Lopez Jean Dupuy Guillot Hubert Berger Carpentier
Sanchez Dupuis Moulin Louis Deschamps Huet Vasseur Perez Boucher Fleury Royer Klein Jacquet Adam Paris Poirier
Marty Aubry Guyot Carre Charles Renault Charpentier Menard Maillard Baron Bertin Bailly Herve Schneider
Fernandez Le Collet Leger Bouvier Julien Prevost Millet Perrot Daniel Cousin Germain Breton Besson Langlois
Remy Pelletier Leveque Perrier Leblanc Barre Lebrun Marchal Weber Mallet Hamon Boulanger Jacob Monnier
Michaud Rodriguez Guichard Gillet Etienne Grondin Poulain Tessier Chevallier Collin Chauvin Da Bouchet Gay
Lemaitre Benard Marechal Humbert Reynaud Antoine Hoarau Perret Barthelemy Cordier Pichon Lejeune Gilbert Lamy
Delaunay Pasquier Carlier Laporte""".split()
FIRST = """Anna Lucas Emma Hugo Lea Louis Chloe Jules Ines Adam Sarah Noah Jade Leo Manon Paul Zoe Tom Alice Nina
Oscar Clara Max Lena Theo Eva Arthur Mila Victor Julia""".split()
CITIES = """Zürich Lyon Genève München Köln Málaga Sevilla Québec Kraków Århus Bordeaux Lisboa Porto Nantes Lille
Torino Bologna Gdańsk Brno Tromsø Göteborg Dijon Nîmes Besançon Montréal Zaragoza Córdoba València Aachen Graz""".split()
STREETS = """Rue de la Paix|Main Street|Baker Street|Avenue Foch|Calle Mayor|Hauptstraße|Rue Lepic|Station Road|
Church Lane|Rue Oberkampf|High Street|Elm Avenue|Quai Voltaire|Rue Mouffetard|Park Road""".replace("\n", "").split("|")


@dataclass(frozen=True)
class Category:
    name: str
    kind: str  # "screen", "paper", "document", "sign", "plate"
    paraphrases: tuple[str, ...]


CATEGORIES = [
    Category("bakery receipt", "paper", ("bakery bill", "what I paid for bread and pastries")),
    Category("grocery receipt", "paper", ("supermarket shopping receipt", "food shopping bill")),
    Category("pharmacy receipt", "paper", ("receipt from the chemist for medicine", "drugstore purchase")),
    Category("restaurant bill", "paper", ("dinner bill at an italian place", "check for a meal with wine")),
    Category("coffee receipt", "paper", ("coffee and cake receipt", "cafe purchase of drinks")),
    Category("boarding pass", "paper", ("plane ticket", "airline boarding card for my flight")),
    Category("train ticket", "paper", ("railway ticket", "ticket for the rail journey")),
    Category("concert ticket", "paper", ("ticket for a music show", "entry pass for a live gig")),
    Category("lease", "document", ("rental contract for a flat", "housing rent contract")),
    Category("invoice", "document", ("bill from a company asking for payment", "payment request for services")),
    Category("prescription", "document", ("doctor's note for antibiotics", "medication instructions from a physician")),
    Category("recipe", "screen", ("how to cook breakfast", "cooking instructions for a batter")),
    Category("shopping list", "screen", ("things to buy at the store", "groceries to pick up")),
    Category("chat", "screen", ("text messages about meeting for dinner", "conversation planning an evening out")),
    Category("wifi", "screen", ("internet login details", "wireless network credentials")),
    Category("appointment", "screen", ("reminder for the teeth doctor", "dental visit in my calendar")),
    Category("jazz poster", "sign", ("flyer for a music event", "advert for a live band evening")),
    Category("yard sale", "sign", ("advert for selling old things", "second hand sale this weekend")),
    Category("lost cat", "sign", ("missing pet notice", "looking for a runaway animal")),
    Category("street sign", "sign", ("name of the road", "road name plate on a wall")),
    Category("parking sign", "sign", ("parking restriction", "where I am not allowed to leave the car")),
    Category("exit sign", "sign", ("way out in case of fire", "evacuation route marker")),
    Category("slide", "document", ("presentation about quarterly sales", "business meeting slide on earnings")),
    Category("plate", "plate", ("car number plate", "vehicle registration")),
    Category("menu board", "sign", ("list of dishes at a restaurant", "what the cafe serves today")),
]


@dataclass
class Sample:
    id: str
    category: str
    kind: str
    lines: list[str]
    words: list[str]  # exact-word queries (unique to this sample)
    substrings: list[str]  # substring queries (a part of a unique token)
    font: str
    size_px: int
    turn: int  # degrees counter-clockwise the content is turned in the stored pixels
    exif: int  # EXIF orientation stored (1: none; 6 / 8: the viewer turns it)
    background: int  # index of the shared photo pasted onto (-1: none)
    seed: int
    split: str = "dev"
    extra: dict = field(default_factory=dict)

    @property
    def text(self) -> str:
        """Everything drawn, as read: a screen's status bar first."""
        return "\n".join([STATUS_BAR, *self.lines] if self.kind == "screen" else self.lines)


def _code(rng: np.random.Generator, pattern: str) -> str:
    """A code from a pattern: A a letter, 9 a digit, anything else as is."""
    letters = "ABCDEFGHJKLMNPRSTUVWXYZ"
    return "".join(
        letters[rng.integers(len(letters))] if c == "A" else str(rng.integers(10)) if c == "9" else c for c in pattern
    )


def _money(rng: np.random.Generator, lo: float, hi: float) -> str:
    return f"{rng.uniform(lo, hi):.2f}"


def _content(cat: str, rng: np.random.Generator, name: str, first: str, city: str, street: str) -> tuple[list[str], list[str], list[str]]:
    """(lines, word queries, substring queries) of one sample of category `cat`."""
    pick = lambda options, n: list(rng.choice(options, n, replace=False))  # noqa: E731
    card = _code(rng, "9999")
    if cat.endswith("receipt") or cat == "restaurant bill":
        shop, items = {
            "bakery receipt": (f"Boulangerie {name}", ["Croissant", "Baguette", "Pain au chocolat", "Brioche", "Éclair café", "Tarte aux pommes", "Chausson"]),
            "grocery receipt": (f"{name} Market", ["Milk 1L", "Free range eggs", "Bananas", "Tomatoes", "Cheddar", "Rice 1kg", "Olive oil"]),
            "pharmacy receipt": (f"Pharmacie {name}", ["Ibuprofen 400mg", "Paracetamol", "Plasters", "Vitamin C", "Throat lozenges", "Sunscreen SPF50"]),
            "coffee receipt": (f"Café {name}", ["Espresso", "Cappuccino", "Flat white", "Blueberry muffin", "Chai latte", "Cookie"]),
            "restaurant bill": (f"Trattoria {name}", ["Pizza margherita", "Lasagne", "Tiramisu", "House wine 50cl", "Bruschetta", "Panna cotta"]),
        }[cat]
        chosen = pick(items, int(rng.integers(3, 6)))
        prices = [_money(rng, 1, 18) for _ in chosen]
        total = f"{sum(float(p) for p in prices):.2f}"
        lines = [shop.upper(), f"{int(rng.integers(1, 99))} {street}", city, f"{int(rng.integers(1, 28)):02d}/{int(rng.integers(1, 12)):02d}/2024 {int(rng.integers(7, 21)):02d}:{int(rng.integers(0, 59)):02d}"]
        lines += [f"{it}  {p}" for it, p in zip(chosen, prices, strict=True)]
        lines += [f"TOTAL EUR {total}", f"CARD ****{card}", "Merci / Thank you"]
        return lines, [name], [card]
    if cat == "boarding pass":
        flight, gate, seat = _code(rng, "AA 9999"), _code(rng, "A99"), f"{int(rng.integers(1, 40))}{'ABCDEF'[int(rng.integers(6))]}"
        dest = city
        return ([ "BOARDING PASS", f"{first.upper()} {name.upper()}", f"Flight {flight}", f"To {dest}", f"Gate {gate}   Seat {seat}", f"Boarding {int(rng.integers(5, 22)):02d}:{int(rng.integers(0, 59)):02d}"],
                [f"gate {gate}", f"{name}"], [flight.replace(' ', '')[2:]])
    if cat == "train ticket":
        coach, ref = int(rng.integers(1, 18)), _code(rng, "AA99AA")
        return ([f"{city.upper()} -> {rng.choice([c for c in CITIES if c != city]).upper()}", "2nd class", f"Coach {coach}  Seat {int(rng.integers(1, 90))}", f"Departure {int(rng.integers(5, 22)):02d}:{int(rng.integers(0, 59)):02d}  Platform {int(rng.integers(1, 20))}", f"Booking ref {ref}", f"Passenger {first} {name}"],
                [f"{name}"], [ref[:4]])
    if cat == "concert ticket":
        band = f"The {name} {rng.choice(['Quartet', 'Trio', 'Brothers', 'Orchestra', 'Collective'])}"
        row = _code(rng, "A")
        return ([ "LIVE IN CONCERT", band, f"{city} Arena", f"Doors 19:{int(rng.integers(0, 59)):02d}", f"Row {row}  Seat {int(rng.integers(1, 40))}", f"Ticket no. {_code(rng, '99999999')}"],
                [f"{name} {band.split()[-1]}"], [name[: max(4, len(name) - 2)]])
    if cat == "lease":
        rent = f"{int(rng.integers(6, 30)) * 50:,}"
        return (["RESIDENTIAL LEASE AGREEMENT", f"This agreement is made between {first} {name} (Landlord)", f"and the Tenant, for the premises at {int(rng.integers(1, 99))} {street}, {city}.", f"The monthly rent is {rent} EUR, payable on the first day of each month.", "The tenancy begins on 1 September 2024 for a term of twelve months.", "Signed: ____________________"],
                ["lease agreement", name], [name[1:6]])
    if cat == "invoice":
        no = _code(rng, "2024-9999")
        return ([f"{name.upper()} CONSULTING", f"INVOICE No. {no}", f"Bill to: {first} {rng.choice(SURNAMES)}", f"Web design services  {_money(rng, 200, 2000)}", f"VAT 20%  {_money(rng, 40, 400)}", "Amount due within 30 days", f"IBAN FR76 {_code(rng, '9999 9999 9999')}"],
                [f"invoice {no}"], [no[-4:]])
    if cat == "prescription":
        drug = rng.choice(["Amoxicillin 500 mg", "Azithromycin 250 mg", "Doxycycline 100 mg", "Cefalexin 500 mg"])
        return ([f"Dr. {first} {name}", "General Practitioner", f"{int(rng.integers(1, 99))} {street}, {city}", "PRESCRIPTION", f"{drug}", "One capsule three times daily for 7 days", "Take with food. Complete the course."],
                [f"Dr. {name}"], [name[:5]])
    if cat == "recipe":
        return ([f"{first}'s pancakes", "Ingredients", "2 eggs", "250 g flour", "500 ml milk", "1 pinch of salt", "Whisk, rest 30 min,", "fry in butter"], [f"{first}'s pancakes"], [])
    if cat == "shopping list":
        items = pick(["oat milk", "avocados", "dish soap", "basmati rice", "lemons", "toothpaste", "coffee beans", "spinach", "parmesan", "batteries AA"], 5)
        code = _code(rng, "AA9")
        return ([f"To buy ({name})", *[f"- {it}" for it in items], f"list {code}"], [name], [])
    if cat == "chat":
        place = f"{name}'s"
        return ([first, "Are we still on for dinner tonight?", f"Yes! 8pm at {place} on {street}", "Great, I'll book a table for four", "See you there", "Delivered"], [place], [name[1:5]])
    if cat == "wifi":
        ssid, pwd = f"{name}-Guest", _code(rng, "AAA9999AA")
        return (["Wi-Fi", f"Network: {ssid}", f"Password: {pwd}", "Security: WPA2", "Connect automatically"], [ssid], [pwd[:5]])
    if cat == "appointment":
        return (["Calendar", f"Dentist - Dr {name}", f"Tuesday {int(rng.integers(1, 28))} October", f"{int(rng.integers(8, 18))}:30 - check-up and cleaning", f"{int(rng.integers(1, 99))} {street}", "Alert: 1 day before"], [f"Dr {name}"], [name[:4]])
    if cat == "jazz poster":
        return (["JAZZ NIGHT", f"{first} {name} Trio", f"Friday {int(rng.integers(1, 28))} May, 8 PM", f"Le {rng.choice(SURNAMES)} Club, {city}", "Free entry"], [f"{first} {name}"], [name[:5]])
    if cat == "yard sale":
        return (["YARD SALE", f"Saturday {int(rng.integers(1, 28))}th 9am-2pm", f"{int(rng.integers(1, 99))} {street}", "Books, toys, furniture", f"Call {name} {_code(rng, '06 99 99 99 99')}"], [name], [])
    if cat == "lost cat":
        pet = rng.choice(["Mimi", "Felix", "Tigrou", "Luna", "Oscar", "Simba", "Nala", "Minou"])
        phone = _code(rng, "07 99 99 99 99")
        return (["LOST CAT", f"Answers to {pet}", f"Last seen near {street}", f"Call {first} {phone}", "REWARD"], [f"{first} {phone[:5]}"], [phone[3:8]])
    if cat == "street sign":
        return ([f"Rue {first} {name}", f"{city}"], [f"Rue {first} {name}"], [])
    if cat == "parking sign":
        zone = _code(rng, "A9")
        return (["NO PARKING", "Mon-Sat 8AM-6PM", "Tow away zone", f"Zone {zone}"], [f"zone {zone}"], [])
    if cat == "exit sign":
        floor = int(rng.integers(1, 30))
        return (["EMERGENCY EXIT", f"Floor {floor} - Stair {_code(rng, 'A')}", "Keep clear"], ["emergency exit", f"floor {floor}"], [])
    if cat == "slide":
        q = int(rng.integers(1, 5))
        return ([f"Q{q} Revenue Review", f"Prepared by {first} {name}", "- Revenue up 12% year on year", "- Margin stable at 34%", "- Next steps: hiring in Sales"], [f"Q{q} revenue", name], [name[:5]])
    if cat == "plate":
        plate = _code(rng, "AA99 AAA")
        return ([plate], [plate], [plate[:4]])
    if cat == "menu board":
        dish = rng.choice(["Soupe à l'oignon", "Croque-monsieur", "Quiche lorraine", "Salade niçoise", "Bœuf bourguignon"])
        return (["TODAY'S MENU", f"Chez {name}", f"{dish}  {_money(rng, 6, 19)}", f"Crème brûlée  {_money(rng, 4, 8)}", f"Café  {_money(rng, 1, 3)}"], [f"Chez {name}"], [name[:5]])
    raise ValueError(f"category {cat!r}")


def make_samples(n: int, *, seed: int = 0, backgrounds: int = 0) -> list[Sample]:
    """`n` samples, categories in turn, half dev (even index), half test (odd). Names unique per sample."""
    rng = np.random.default_rng(seed)
    names = list(rng.permutation(SURNAMES))
    if n > len(names):
        raise ValueError(f"{n} samples: at most {len(names)} (one surname each)")
    font_files = fonts()
    out = []
    for i in range(n):
        cat = CATEGORIES[i % len(CATEGORIES)]
        srng = np.random.default_rng([seed, i])
        name = str(names[i])
        lines, words, subs = _content(cat.name, srng, name, str(srng.choice(FIRST)), str(srng.choice(CITIES)), str(srng.choice(STREETS)))
        kind = cat.kind
        font = font_files[int(srng.integers(len(font_files)))]
        size = {"screen": int(srng.integers(34, 52)), "paper": int(srng.integers(26, 40)), "document": int(srng.integers(24, 36)),
                "sign": int(srng.integers(48, 90)), "plate": 110}[kind]
        r = srng.random()  # orientation: 70% upright, 10% EXIF-sideways, 20% turned in the pixels
        turn, exif = 0, 1
        if r > 0.9:
            exif = int(srng.choice([6, 8]))
        elif r > 0.7:
            turn = int(srng.choice([90, 180, 270]))
        bg = int(srng.integers(backgrounds)) if backgrounds and kind in ("paper", "sign", "plate", "document") else -1
        if kind == "document" and srng.random() < 0.4:
            bg = -1  # a flat scan
        out.append(Sample(f"ocr{i:03d}_{cat.name.replace(' ', '-')}", cat.name, kind, lines, words, subs or [w[:4] for w in words[:1]],
                          font, size, turn, exif, bg, seed * 1000 + i, "dev" if i % 2 == 0 else "test"))
    return out


def _draw_card(sample: Sample, rng: np.random.Generator) -> Image.Image:
    """The text drawn flat on its paper, screen, sign or plate (RGB)."""
    font = ImageFont.truetype(sample.font, sample.size_px)
    kind = sample.kind
    if kind == "screen":
        dark = rng.random() < 0.3
        bg, fg = ((18, 18, 20), (235, 235, 235)) if dark else ((255, 255, 255), (20, 20, 20))
        img = Image.new("RGB", (1080, 2340), bg)
        d = ImageDraw.Draw(img)
        small = ImageFont.truetype(sample.font, 32)
        clock, _, signal = STATUS_BAR.partition(" ")
        d.text((60, 30), clock, fill=fg, font=small)
        d.text((880, 30), signal, fill=fg, font=small)
        y = 180
        for j, line in enumerate(sample.lines):
            if sample.category == "chat" and 0 < j < 5:
                mine = j % 2 == 0
                w = d.textlength(line, font=font)
                x0 = 1080 - 60 - w - 40 if mine else 60
                d.rounded_rectangle((x0, y - 16, x0 + w + 40, y + sample.size_px + 20), 28, fill=(0, 122, 255) if mine else ((60, 60, 64) if dark else (229, 229, 234)))
                d.text((x0 + 20, y), line, fill=(255, 255, 255) if mine else fg, font=font)
                y += sample.size_px + 70
            else:
                d.text((60, y), line, fill=fg, font=font)
                y += int(sample.size_px * 1.6)
        return img
    pad = sample.size_px
    widths = [ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(line, font=font) for line in sample.lines]
    w = int(max(widths) + 2 * pad)
    h = int(len(sample.lines) * sample.size_px * 1.5 + 2 * pad)
    colours = {
        "paper": ((250, 248, 240), (25, 25, 25)),
        "document": ((255, 255, 255), (10, 10, 10)),
        "plate": ((250, 210, 0) if rng.random() < 0.5 else (245, 245, 245), (15, 15, 15)),
        "sign": [((20, 70, 160), (255, 255, 255)), ((250, 250, 250), (180, 20, 20)), ((0, 120, 60), (255, 255, 255)), ((30, 30, 30), (250, 220, 60))][int(rng.integers(4))],
    }[kind]
    img = Image.new("RGB", (w, h), colours[0])
    d = ImageDraw.Draw(img)
    if kind == "plate":
        d.rectangle((4, 4, w - 5, h - 5), outline=(0, 0, 0), width=6)
    for j, line in enumerate(sample.lines):
        x = pad if kind in ("paper", "document") else (w - widths[j]) / 2
        d.text((x, pad + j * sample.size_px * 1.5), line, fill=colours[1], font=font)
    return img


def _paste(card: Image.Image, photo: Image.Image, rng: np.random.Generator, *, fraction: float) -> Image.Image:
    """`card` warped in perspective onto `photo` (resized so its long side is 1280), covering about
    `fraction` of the photo's width."""
    scale = 1280 / max(photo.size)
    photo = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.Resampling.BICUBIC)
    W, H = photo.size
    cw = fraction * W
    ch = cw * card.height / card.width
    if ch > 0.9 * H:
        ch = 0.9 * H
        cw = ch * card.width / card.height
    x0, y0 = rng.uniform(0, W - cw), rng.uniform(0, H - ch)
    j = 0.06 * min(cw, ch)  # perspective: each corner moved a little
    quad = np.array([[x0, y0], [x0 + cw, y0], [x0 + cw, y0 + ch], [x0, y0 + ch]]) + rng.uniform(-j, j, (4, 2))
    # PIL's perspective transform maps output pixels to input: solve for the coefficients
    src = np.array([[0, 0], [card.width, 0], [card.width, card.height], [0, card.height]], float)
    a = []
    for (x, y), (u, v) in zip(quad, src, strict=True):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    coeffs = np.linalg.solve(np.array(a), src.reshape(8))
    warped = card.transform((W, H), Image.Transform.PERSPECTIVE, tuple(coeffs), Image.Resampling.BICUBIC)
    mask = Image.new("L", card.size, 255).transform((W, H), Image.Transform.PERSPECTIVE, tuple(coeffs), Image.Resampling.BILINEAR)
    photo.paste(warped, (0, 0), mask)
    return photo


def render(sample: Sample, out_dir: Path, backgrounds: list[Path]) -> Path:
    """Draw `sample` into `out_dir` (PNG for screens and scans, JPEG for photographs); its path."""
    rng = np.random.default_rng(sample.seed)
    card = _draw_card(sample, rng)
    if sample.background >= 0:
        with Image.open(backgrounds[sample.background]) as bg:
            fraction = {"paper": 0.45, "document": 0.6, "sign": 0.55, "plate": 0.3}[sample.kind] * rng.uniform(0.8, 1.25)
            img = _paste(card, bg.convert("RGB"), rng, fraction=min(fraction, 0.95))
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.0, 1.2))))
        suffix, quality = ".jpg", int(rng.integers(45, 85))
    else:
        img = card
        if sample.kind == "document" and max(img.size) < 1400:  # a scan: a page-sized image
            page = Image.new("RGB", (1240, max(1754, img.height + 200)), (255, 255, 255))
            page.paste(img, (60, 120))
            img = page
        suffix, quality = (".png", 0) if sample.exif == 1 else (".jpg", 92)
    if sample.turn:
        img = img.rotate(sample.turn, expand=True)
    exif = None
    if sample.exif in (6, 8):
        # stored sideways: the viewer turns it by 90 (6: clockwise, 8: counter-clockwise) to show it upright
        img = img.rotate(90 if sample.exif == 6 else 270, expand=True)
        exif = Image.Exif()
        exif[0x0112] = sample.exif
        suffix = ".jpg"
    path = out_dir / f"{sample.id}{suffix}"
    out_dir.mkdir(parents=True, exist_ok=True)
    if suffix == ".png":
        img.save(path)
    else:
        img.save(path, "JPEG", quality=quality or 90, exif=exif.tobytes() if exif is not None else b"")
    return path
