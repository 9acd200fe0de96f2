"""The eight French B2B appointment-setting calls of the demo floor, as data.

Each call is a list of turns placed on two timelines (agent = near channel, prospect = far channel).
A turn's ``gap_s`` is measured from the moment the floor became free (the latest end of any turn so
far): positive is a pause, negative starts the turn while the other party is still speaking.
Texts are written out in words (no digits) so espeak-ng reads them predictably.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Speaker = Literal["agent", "prospect"]


@dataclass(frozen=True)
class Voice:
    """An espeak-ng voice setting (never an mbrola voice).

    Attributes:
        variant: espeak-ng voice with variant, e.g. ``"fr+m3"``.
        speed_wpm: espeak-ng ``-s`` speed in words per minute (default 175).
        pitch: espeak-ng ``-p`` base pitch, 0 to 99 (default 50).
        pitch_range: SSML ``<prosody range>`` value, 0 (flat) to 100; 50 is espeak's default.
    """

    variant: str
    speed_wpm: int = 170
    pitch: int = 50
    pitch_range: int = 50


@dataclass(frozen=True)
class Turn:
    """One utterance of one party.

    Attributes:
        speaker: ``"agent"`` (near channel) or ``"prospect"`` (far channel).
        text: French text, plain (escaped into SSML when rendered).
        gap_s: start offset from the end of the floor so far, in seconds; negative overlaps.
    """

    speaker: Speaker
    text: str
    gap_s: float = 0.6


@dataclass(frozen=True)
class CallScript:
    """A whole two-party call."""

    name: str
    description: str
    agent: Voice
    prospect: Voice
    turns: tuple[Turn, ...]


def _a(text: str, gap_s: float = 0.6) -> Turn:
    return Turn("agent", text, gap_s)


def _p(text: str, gap_s: float = 0.6) -> Turn:
    return Turn("prospect", text, gap_s)


BALANCED = CallScript(
    name="balanced",
    description="Appel équilibré : accroche claire, questions ouvertes, écoute, rendez-vous pris.",
    agent=Voice("fr+f2", speed_wpm=168, pitch=55, pitch_range=75),
    prospect=Voice("fr+m4", speed_wpm=165, pitch=45),
    turns=(
        _p("Allô, oui ?"),
        _a("Bonjour monsieur Durand, Claire Martin de la société Optima. Je vous dérange ?", 0.5),
        _p("Euh, j'ai quelques minutes, allez-y.", 0.7),
        _a("Merci. Nous aidons les PME industrielles à réduire leurs coûts d'énergie. "
           "Comment suivez-vous vos consommations aujourd'hui ?", 0.5),
        _p("Eh bien, on reçoit les factures, et c'est à peu près tout. "
           "Personne ne regarde vraiment le détail.", 0.8),
        _a("Je vois. Et sur l'année dernière, est-ce que la facture a beaucoup augmenté ?", 0.6),
        _p("Oui, pas mal. Presque trente pour cent, je crois.", 0.9),
        _a("C'est ce que nous voyons souvent. Nos clients économisent en moyenne "
           "quinze pour cent dès la première année.", 0.6),
        _p("Quinze pour cent ? Et comment vous faites ça, concrètement ?", 0.7),
        _a("Un boîtier de mesure sur chaque machine, et un conseiller qui analyse les courbes "
           "avec vous chaque mois. Le plus simple serait d'en parler vingt minutes "
           "avec notre ingénieur.", 0.5),
        _p("Pourquoi pas. Mais pas cette semaine, je suis en déplacement.", 0.8),
        _a("Bien sûr. Mardi prochain à dix heures, ou plutôt jeudi après-midi ?", 0.5),
        _p("Jeudi après-midi, ça m'irait mieux. Vers quinze heures.", 0.9),
        _a("Parfait, jeudi quinze heures. Je vous envoie l'invitation par courriel. "
           "Merci monsieur Durand, bonne journée.", 0.5),
        _p("Merci, au revoir.", 0.5),
    ),
)

FAST_TALKER = CallScript(
    name="fast-talker",
    description="Agent qui parle beaucoup trop vite (espeak -s 245) : le prospect fait répéter "
    "puis décroche.",
    agent=Voice("fr+m3", speed_wpm=245, pitch=50, pitch_range=60),
    prospect=Voice("fr+f1", speed_wpm=160, pitch=60),
    turns=(
        _p("Oui, allô ?"),
        _a("Bonjour madame, Julien de chez Datalis, nous sommes spécialistes de la sauvegarde "
           "des données pour les cabinets comptables, et je vous appelle parce que nous lançons "
           "une offre complète qui comprend la sauvegarde, l'archivage et la reprise d'activité, "
           "le tout pour un prix mensuel fixe, sans engagement.", 0.4),
        _p("Pardon ? Vous pouvez répéter plus doucement ? Vous êtes de quelle société ?", 0.6),
        _a("Datalis, madame, la sauvegarde des données. Nous travaillons déjà avec plus de "
           "deux cents cabinets dans la région, et en général ils gagnent plusieurs heures par "
           "semaine, parce que tout est automatique, il n'y a plus rien à surveiller.", 0.3),
        _p("D'accord, mais nous avons déjà un prestataire informatique.", 0.7),
        _a("Oui bien sûr, la plupart de nos clients en avaient un aussi, mais justement notre "
           "solution vient en complément, elle ne remplace rien, elle sécurise, et en cas de "
           "panne vous repartez en moins d'une heure, ce qui est très rassurant pendant la "
           "période fiscale.", 0.3),
        _p("Je n'ai pas tout compris, honnêtement.", 0.8),
        _a("Pas de souci, le plus simple c'est une démonstration de trente minutes en ligne, "
           "je peux vous proposer demain matin neuf heures, ou vendredi onze heures, ou même "
           "lundi prochain si vous préférez, comme ça vous verrez tout par vous-même.", 0.3),
        _p("Euh... non, écoutez, envoyez-moi plutôt une documentation par courriel.", 1.0),
        _a("Très bien, je vous envoie tout de suite la plaquette et la grille tarifaire, et je "
           "me permets de vous rappeler la semaine prochaine pour en discuter, d'accord ?", 0.3),
        _p("Si vous voulez. Au revoir.", 0.8),
        _a("Merci madame, excellente journée, au revoir !", 0.3),
    ),
)

SLOW_AGENT = CallScript(
    name="slow-agent",
    description="Agent très lent (espeak -s 115) : le prospect s'impatiente et refuse.",
    agent=Voice("fr+m7", speed_wpm=115, pitch=40, pitch_range=45),
    prospect=Voice("fr+m2", speed_wpm=175, pitch=50),
    turns=(
        _p("Oui ? J'écoute."),
        _a("Bonjour monsieur. Je suis Paul, de la société Logiflux. "
           "Je vous appelle au sujet de vos transports.", 0.7),
        _p("Oui, et donc ?", 0.6),
        _a("Eh bien. Nous proposons. Une plateforme. Pour optimiser les tournées de livraison. "
           "Des entreprises comme la vôtre.", 0.9),
        _p("Oui, j'ai compris. C'est quoi, exactement, votre proposition ?", 0.6),
        _a("Alors. Notre logiciel calcule les meilleurs trajets. "
           "Il réduit les kilomètres parcourus. Et il fait gagner du temps aux chauffeurs.", 0.9),
        _p("Nous avons déjà un outil pour ça. Il marche très bien.", 0.6),
        _a("Je comprends. Mais est-ce que votre outil. Prend en compte la circulation. "
           "En temps réel ?", 1.0),
        _p("Écoutez, je n'ai vraiment pas le temps. Ça ne m'intéresse pas.", 0.5),
        _a("Très bien monsieur. Je vous remercie. Bonne journée.", 1.0),
        _p("Au revoir.", 0.4),
    ),
)

MONOLOGUE = CallScript(
    name="monologue",
    description="Agent qui récite son script plus de trente secondes sans laisser parler le "
    "prospect, qui finit par couper court.",
    agent=Voice("fr+f4", speed_wpm=175, pitch=60, pitch_range=55),
    prospect=Voice("fr+m6", speed_wpm=165, pitch=40),
    turns=(
        _p("Allô ?"),
        _a("Bonjour monsieur, Sophie de l'agence Horizon Formation.", 0.5),
        _a("Je vous appelle parce que nous accompagnons les entreprises de votre secteur sur la "
           "formation de leurs équipes commerciales, et nous avons développé un programme "
           "complet qui couvre la prospection, la négociation et la fidélisation.", 0.25),
        _a("Le programme dure trois mois, il combine des ateliers en présentiel, des modules en "
           "ligne et un accompagnement individuel de chaque commercial par un coach certifié.",
           0.3),
        _a("Nos clients constatent en moyenne une hausse de vingt pour cent de leur chiffre "
           "d'affaires dès le deuxième trimestre, et la totalité du programme peut être prise en "
           "charge par votre opérateur de compétences.", 0.3),
        _p("Mm.", -6.0),
        _a("De plus, nous adaptons chaque module à vos produits et à vos clients, avec des mises "
           "en situation enregistrées, des grilles d'évaluation et un tableau de bord pour le "
           "directeur commercial, qui peut suivre la progression de chacun semaine après "
           "semaine.", 0.3),
        _a("Nous avons déjà formé plus de trois mille commerciaux dans toute la France, dans "
           "l'industrie, la distribution et les services.", 0.3),
        _p("Oui, écoutez...", -2.5),
        _p("Je vous arrête, madame. Nous n'avons aucun budget formation cette année.", 0.5),
        _a("Je comprends tout à fait. Est-ce que je peux quand même vous envoyer notre "
           "brochure ?", 0.7),
        _p("Si vous voulez, par courriel. Au revoir.", 0.8),
        _a("Merci monsieur, bonne journée.", 0.5),
    ),
)

TALK_OVER = CallScript(
    name="talk-over",
    description="Agent qui coupe la parole : il démarre à plusieurs reprises pendant que le "
    "prospect parle encore ; le prospect s'agace et refuse.",
    agent=Voice("fr+m1", speed_wpm=185, pitch=45, pitch_range=60),
    prospect=Voice("fr+f5", speed_wpm=165, pitch=55),
    turns=(
        _p("Bonjour, société Mercier, j'écoute."),
        _a("Bonjour madame, Antoine de Flotte Plus, je souhaiterais parler au responsable du "
           "parc automobile.", 0.4),
        _p("C'est moi, mais je dois vous prévenir que nous venons de renouveler tous nos "
           "contrats de location il y a à peine six mois.", 0.6),
        _a("Justement, c'est le bon moment pour comparer, nos tarifs sont parmi les plus bas "
           "du marché.", -2.0),
        _p("Comme je vous le disais, nous sommes engagés pour trois ans avec notre loueur "
           "actuel et je ne vois pas l'intérêt de changer maintenant.", 0.5),
        _a("Oui mais les pénalités de sortie peuvent être prises en charge par nous.", -1.8),
        _p("Laissez-moi finir, s'il vous plaît. Ce n'est pas seulement une question de prix, "
           "nous sommes très satisfaits du service et de l'entretien des véhicules.", 0.7),
        _a("Bien sûr, je comprends, mais nous proposons aussi l'entretien, et même le véhicule "
           "de remplacement.", -1.5),
        _p("Et puis, pour être honnête, le dernier commercial qui nous a appelés nous avait "
           "promis des économies que nous n'avons jamais vues sur nos factures.", 0.6),
        _a("Ah mais chez nous ce n'est pas du tout pareil, nous nous engageons par écrit sur "
           "le montant des économies.", -1.6),
        _p("Monsieur, vous ne m'écoutez pas. Je vous ai dit que ça ne m'intéresse pas pour le "
           "moment, rappelez-nous dans deux ans.", 0.6),
        _a("Je peux quand même vous envoyer une simulation ?", -1.2),
        _p("Non merci. Au revoir monsieur.", 0.4),
        _a("Au revoir madame.", 0.6),
    ),
)

LONG_GAPS = CallScript(
    name="long-gaps",
    description="Agent qui met environ trois secondes à répondre après chaque intervention du "
    "prospect ; l'appel se termine quand même par un rendez-vous.",
    agent=Voice("fr+f3", speed_wpm=160, pitch=50, pitch_range=50),
    prospect=Voice("fr+m8", speed_wpm=170, pitch=45),
    turns=(
        _p("Allô, oui ?"),
        _a("Bonjour monsieur, ici Léa de Cloudia, solutions de téléphonie pour les "
           "entreprises.", 3.0),
        _p("Oui, bonjour.", 0.6),
        _a("Vous êtes bien le gérant de la société ?", 3.2),
        _p("Oui, c'est moi.", 0.6),
        _a("Très bien. Comment gérez-vous les appels de vos clients aujourd'hui, quand vous "
           "êtes en rendez-vous ?", 3.0),
        _p("Ils tombent sur le répondeur, la plupart du temps. Ce n'est pas idéal.", 0.7),
        _a("Notre standard virtuel renvoie les appels vers le bon collaborateur, sur son "
           "portable ou sur son ordinateur.", 3.1),
        _p("Et ça coûte combien, ce genre de service ?", 0.6),
        _a("À partir de douze euros par mois et par utilisateur, sans engagement.", 2.9),
        _p("C'est raisonnable. Vous pourriez me montrer comment ça fonctionne ?", 0.7),
        _a("Avec plaisir. Je vous propose un rendez-vous en visio, mercredi à onze heures ?",
           3.0),
        _p("Mercredi onze heures, c'est noté.", 0.6),
        _a("Merci monsieur, à mercredi.", 3.0),
        _p("Au revoir.", 0.5),
    ),
)

HESITANT = CallScript(
    name="hesitant-prospect",
    description="Prospect hésitant (euh, je ne sais pas, longs silences avant de répondre) ; "
    "l'agent reformule avec patience et obtient un rendez-vous provisoire.",
    agent=Voice("fr+m5", speed_wpm=160, pitch=50, pitch_range=65),
    prospect=Voice("fr+f2", speed_wpm=150, pitch=45),
    turns=(
        _p("Allô ?"),
        _a("Bonjour madame Petit, Marc de Sécuria, spécialiste de la protection des locaux "
           "professionnels. Vous avez une minute ?", 0.5),
        _p("Euh... oui... enfin, une minute, oui.", 1.8),
        _a("Merci. Vos locaux sont-ils équipés d'une alarme aujourd'hui ?", 0.6),
        _p("Euh... je ne sais pas trop... je crois qu'il y a quelque chose, mais... "
           "je ne sais pas si ça marche encore.", 2.2),
        _a("D'accord, c'est fréquent. Est-ce que vous avez déjà eu un problème, une "
           "intrusion, un vol ?", 0.7),
        _p("Hmm... l'année dernière, oui... enfin, une tentative. Euh... on n'a rien perdu.",
           2.5),
        _a("Je comprends que ce soit inquiétant. Nous pouvons passer faire un diagnostic "
           "gratuit, sans engagement.", 0.7),
        _p("Euh... je ne sais pas... il faudrait que j'en parle à mon associé.", 2.0),
        _a("Bien sûr. Si je vous propose un créneau provisoire, vendredi matin, vous pourrez "
           "toujours l'annuler après en avoir parlé avec lui.", 0.7),
        _p("Euh... bon... d'accord... vendredi matin, alors... mais c'est provisoire.", 2.4),
        _a("C'est noté, provisoire. Je vous envoie une confirmation. Merci madame Petit.", 0.6),
        _p("Merci... au revoir.", 1.0),
    ),
)

MONOTONE = CallScript(
    name="monotone",
    description="Agent monocorde qui lit son script sans intonation (plage de hauteur quasi "
    "nulle) ; le prospect décroche poliment.",
    agent=Voice("fr+m2", speed_wpm=165, pitch=35, pitch_range=3),
    prospect=Voice("fr+f4", speed_wpm=170, pitch=55),
    turns=(
        _p("Oui, bonjour ?"),
        _a("Bonjour madame. Je suis Nicolas de la société Papyrus Bureau. Nous fournissons "
           "les fournitures de bureau aux entreprises de votre région.", 0.6),
        _p("Ah, d'accord. Nous avons déjà un fournisseur, vous savez.", 0.7),
        _a("Nous proposons une livraison en vingt-quatre heures et des prix négociés sur "
           "plus de cinq mille références. Nos clients économisent en moyenne dix pour cent "
           "sur leurs achats.", 0.6),
        _p("Dix pour cent, ce n'est pas énorme. Et vous livrez les cartouches d'encre aussi ?",
           0.8),
        _a("Oui madame. Nous livrons les cartouches d'encre, le papier, le mobilier et les "
           "produits d'entretien. Tout est disponible sur notre site internet.", 0.6),
        _p("Bon. Je vais y réfléchir. Vous avez un catalogue ?", 0.7),
        _a("Je peux vous envoyer notre catalogue par courriel. Quelle est votre adresse ?",
           0.6),
        _p("Envoyez-le à l'adresse contact de la société, elle est sur notre site.", 0.8),
        _a("Très bien madame. Je vous remercie pour votre temps. Bonne journée.", 0.6),
        _p("Merci, au revoir.", 0.5),
    ),
)

SCRIPTS: tuple[CallScript, ...] = (
    BALANCED,
    FAST_TALKER,
    SLOW_AGENT,
    MONOLOGUE,
    TALK_OVER,
    LONG_GAPS,
    HESITANT,
    MONOTONE,
)
"""The demo floor's calls, in seat order."""
