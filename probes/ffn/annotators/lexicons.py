"""Hand-written word pools shared by the heuristic annotator and the calibration set, and the split
that keeps them apart.

Each pool that a rule could simply look words up in (function words, code tokens, maths terms) is
split in two by a hash of the word: the heuristic annotator may use half ``A`` only, the
calibration set draws from half ``B`` only (``half(word)``). The heuristic reaches the other half
only by generalising (GloVe similarity to its half's centroid), which is what calibration measures.
Topics and foreign words are not split: the heuristic never reads them (it uses GloVe coherence and
wordfreq's language frequencies instead), so for those labels the calibration set is another source.
"""

from __future__ import annotations

import hashlib

SPLIT_SALT = "shiftcheck-calibration-v1:"


def half(key: str) -> str:
    """'A' (the annotator's half) or 'B' (the calibration set's half), fixed by sha256 of the key."""
    return "AB"[int(hashlib.sha256((SPLIT_SALT + key).encode()).hexdigest(), 16) % 2]


def _pool(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(text.split()))


# Closed-class English words by grammatical class (determiners, prepositions, conjunctions, pronouns,
# auxiliaries and modals, degree and linking adverbs).
FUNCTION_WORDS = _pool("""
a an the this that these those my your his her its our their some any no every each either neither both
few many much more most several such all half enough
of in on at by for with about against between into through during before after above below to from up
down out off over under upon within without toward towards among amongst beside besides beyond despite
except across along around behind beneath onto throughout underneath via per
and but or nor so yet if because as until while although though whether unless whereas since once than
lest
i me we us you he him she they them it who whom whose which what whoever whomever whichever whatever
myself yourself himself herself itself ourselves themselves yourselves mine yours hers ours theirs
is am are was were be been being have has had having do does did will would shall should can could may
might must ought
not too very just also only there here then thus hence therefore however else even still quite rather
almost nearly
""")

# Programming tokens from several languages and tools (keywords, standard-library names, commands).
CODE_TOKENS = _pool("""
def var let const function func return import export class struct enum void int str float bool char
string array list dict tuple null nil true false self new async await yield lambda print println printf
console log json xml html css sql http https api url numpy pandas matplotlib torch tensorflow sklearn
react node npm pip git docker kubernetes java javascript python typescript rust golang php ruby kotlin
swift bash shell linux unix regex boolean integer iterator iterate variable parameter argument compile
compiler runtime debug debugger exception stack queue pointer malloc namespace module package library
framework method methods callback endpoint query schema database repo github commit branch merge syntax
script scripts code coding
elif else endif ifdef ifndef define include typedef sizeof static extern volatile register unsigned
signed long short double goto switch case default break continue while for foreach do try catch finally
throw throws raise except assert private public protected interface implements extends abstract final
override virtual template typename inline constexpr nullptr mutable friend operator delete
strcpy strlen strcmp memcpy memset calloc realloc free fopen fclose fprintf sprintf scanf stdin stdout
stderr stdio stdlib getchar putchar fgets
varchar sqlite mysql postgres select insert update upsert where join groupby orderby truncate
mkdir chmod chown grep sed awk sudo ssh curl wget tar gzip cron systemd nginx apache localhost
href div span tbody iframe onclick dom ajax jquery webpack babel npmjs yarn vue angular django flask
numpy scipy keras pytorch cuda gpu cpu kernel thread mutex semaphore deadlock async sync
getter setter constructor destructor instance inheritance polymorphism encapsulation refactor
dataframe csv yaml toml dockerfile makefile cmake gcc clang llvm jvm bytecode opcode assembler
hashmap arraylist linkedlist treemap hashtable bitmask bitwise xor nullable enum typeof instanceof
stringify parseint settimeout addeventlistener queryselector innerhtml getelementbyid
""")

# Mathematics vocabulary.
MATH_TERMS = _pool("""
math maths mathematics mathematical equation equations formula formulas theorem proof lemma integral
integrals derivative derivatives calculus algebra algebraic geometry geometric trigonometry polynomial
polynomials matrix matrices vector vectors scalar sum sums product quotient fraction fractions numerator
denominator ratio ratios percent percentage probability statistics statistical mean median variance
deviation average logarithm exponent exponential factorial prime primes integer integers decimal
decimals digit digits number numbers numeric numerical calculate calculation calculations compute
arithmetic multiply multiplication divide division subtract subtraction addition plus minus equals
square squared cube root roots radius diameter angle angles triangle triangles circle area volume
perimeter graph graphs axis coordinate coordinates linear quadratic infinity infinite limit limits
solve solving solution theta sine cosine tangent modulo parity
hypotenuse parabola hyperbola ellipse asymptote eigenvalue eigenvector determinant orthogonal
perpendicular parallelogram trapezoid rhombus polygon hexagon pentagon octagon vertex vertices
congruent symmetric isosceles equilateral circumference pythagorean axiom corollary conjecture
inequality inequalities summation series sequence convergent divergent differentiable continuous
integrable logarithmic exponents coefficient coefficients binomial combinatorics permutation
permutations combination combinations divisor divisible multiple multiples remainder lcm gcd
quadrilateral tangent secant cotangent radians degrees arc chord sector diagonal
algebraically geometrically topology manifold homomorphism isomorphism bijection injective surjective
subset superset intersection union cardinality scalar dot cross norm transpose inverse invertible
matrix rank kernel span basis dimension
""")

# Topical clusters, each a concrete domain (the calibration set's semantic items).
TOPICS = {
    "animals": "dog cat horse cow sheep goat pig rabbit mouse lion tiger bear wolf fox deer elephant giraffe "
               "monkey zebra camel donkey squirrel hamster kangaroo leopard",
    "food": "bread cheese butter rice pasta soup salad sandwich pizza cake cookie apple banana orange grape "
            "potato tomato onion carrot chicken beef egg yogurt pancake noodle",
    "body": "head arm leg hand foot finger toe knee elbow shoulder neck chest stomach back ear eye nose mouth "
            "lip tongue tooth chin cheek forehead ankle wrist",
    "clothing": "shirt trousers jacket coat dress skirt sweater jeans shoe boot sock hat scarf glove belt tie "
                "blouse vest pajamas sandal sneaker cap hoodie uniform raincoat",
    "weather": "rain snow wind storm cloud sunshine fog thunder lightning hail drizzle frost breeze hurricane "
               "tornado blizzard humidity drought flood rainbow sleet mist heatwave forecast",
    "furniture": "chair table sofa couch bed desk shelf cabinet drawer wardrobe stool bench armchair dresser "
                 "bookcase mattress cupboard nightstand recliner ottoman futon sideboard cushion",
    "vehicles": "car bus truck train bicycle motorcycle airplane helicopter boat ship taxi van tram subway "
                "scooter tractor ambulance yacht ferry jeep limousine canoe sailboat trolley",
    "professions": "doctor nurse teacher lawyer engineer farmer pilot chef baker plumber carpenter electrician "
                   "dentist pharmacist architect accountant firefighter policeman journalist surgeon "
                   "mechanic librarian waiter banker",
    "family": "mother father sister brother daughter son aunt uncle cousin grandmother grandfather niece "
              "nephew wife husband parent grandson granddaughter stepmother stepfather twin sibling "
              "grandparent fiancee",
    "colours": "red blue green yellow purple orange pink brown black white grey violet indigo turquoise "
               "crimson scarlet maroon beige lavender magenta teal navy ivory amber",
    "sports": "football soccer tennis basketball baseball golf hockey cricket rugby volleyball swimming "
              "boxing wrestling cycling skiing surfing badminton softball lacrosse archery fencing rowing "
              "handball",
    "instruments": "piano guitar violin cello flute trumpet drum saxophone clarinet harp trombone oboe banjo "
                   "ukulele accordion harmonica tuba bassoon mandolin organ xylophone tambourine viola",
    "plants": "oak pine maple birch willow cedar elm palm fern moss rose tulip daisy lily orchid sunflower "
              "cactus ivy bamboo lavender poppy magnolia juniper cypress",
    "emotions": "happy sad angry afraid joyful anxious lonely proud jealous nervous excited calm bored "
                "grateful ashamed guilty hopeful furious cheerful miserable delighted worried frustrated",
    "kitchen": "spoon fork knife plate bowl cup mug pan pot kettle oven stove toaster blender fridge "
               "microwave ladle spatula whisk colander grater teapot saucepan cutlery",
    "buildings": "house church school hospital castle tower palace temple mosque cathedral museum library "
                 "stadium factory warehouse barn cottage mansion skyscraper apartment hotel prison theatre",
    "metals": "iron copper silver gold zinc tin lead aluminum nickel platinum titanium chromium cobalt "
              "tungsten magnesium mercury lithium uranium bronze brass steel sodium potassium",
    "geography": "mountain river lake ocean sea valley hill island desert forest canyon glacier volcano "
                 "plateau peninsula beach cliff waterfall swamp meadow prairie delta lagoon marsh",
    "tools": "hammer screwdriver wrench saw drill pliers chisel shovel rake axe ladder tape clamp sander "
             "crowbar trowel mallet hacksaw spanner toolbox wheelbarrow pickaxe sledgehammer",
    "crime": "murder theft robbery burglary arson fraud kidnapping assault smuggling bribery forgery "
             "blackmail extortion homicide vandalism shoplifting embezzlement trafficking poaching "
             "piracy mugging perjury manslaughter",
}

# Common words of six languages (function and content words), avoiding English homographs. The
# calibration set's translation items; the heuristic reads wordfreq's language frequencies instead.
FOREIGN = {
    "fr": "avec pour dans nous vous ils elles mais donc aussi toujours jamais beaucoup maintenant "
          "pourquoi comment chez leur leurs notre votre cette sont avoir faire pouvoir savoir vouloir "
          "maison voiture travail monde jour nuit homme femme enfant ville eau livre merci bonjour "
          "demain hier",
    "es": "pero porque cuando donde ahora siempre nunca mucho poco nosotros ellos ellas usted tambien "
          "entonces hacer tener decir poder querer saber casa ciudad mundo hombre mujer nino agua libro "
          "noche tiempo gracias manana ayer hoy bueno malo grande pequeno trabajo",
    "de": "und nicht auch aber oder wenn weil dass noch schon immer wieder sehr mehr heute morgen gestern "
          "haben werden sein machen sagen gehen kommen wissen haus stadt welt mann frau wasser buch "
          "nacht zeit arbeit danke bitte klein",
    "it": "perche quando dove adesso sempre anche molto poco questo quello sono essere avere "
          "potere volere sapere casa citta mondo uomo donna bambino acqua libro notte grazie domani "
          "ieri oggi buono cattivo grande piccolo lavoro",
    "pt": "porque quando onde agora sempre nunca muito pouco nosso nossa eles elas voce tambem entao fazer "
          "ter dizer poder querer saber casa cidade mundo homem mulher crianca agua livro noite "
          "obrigado amanha ontem hoje bom pequeno trabalho",
    "nl": "maar omdat wanneer waar altijd nooit veel weinig wij jullie zij ook dus hebben worden zijn "
          "maken zeggen gaan komen weten huis stad wereld vrouw boek nacht tijd werk "
          "alstublieft goed klein morgen gisteren vandaag",
}
