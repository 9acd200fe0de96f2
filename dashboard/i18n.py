"""Interface strings in French (default) and English, chosen per user."""

from __future__ import annotations

import json
from collections.abc import Callable

from . import registry

LANGS = ("fr", "en")

STRINGS: dict[str, tuple[str, str]] = {
    # key: (fr, en)
    "nav.floor": ("Plateau", "Floor"),
    "nav.me": ("Mon espace", "My view"),
    "nav.teams": ("Équipes", "Teams"),
    "nav.campaigns": ("Campagnes", "Campaigns"),
    "nav.audit": ("Journal d'audit", "Audit log"),
    "nav.logout": ("Déconnexion", "Log out"),
    "lang.other": ("English", "Français"),
    "login.title": ("Connexion", "Log in"),
    "login.user": ("Identifiant", "Username"),
    "login.password": ("Mot de passe", "Password"),
    "login.submit": ("Se connecter", "Log in"),
    "login.expired": ("Session expirée, veuillez réessayer.", "Session expired, please retry."),
    "login.wrong": ("Identifiant ou mot de passe incorrect.", "Wrong username or password."),
    "login.throttled": ("Trop de tentatives. Réessayez plus tard.",
                        "Too many attempts. Try again later."),
    "totp.title": ("Code de vérification", "Verification code"),
    "totp.help": ("Saisissez le code à 6 chiffres de votre application d'authentification.",
                  "Enter the 6-digit code from your authenticator app."),
    "totp.setup_title": ("Activer la double authentification", "Set up two-factor authentication"),
    "totp.setup_help": ("Ajoutez cette clé à votre application d'authentification, puis saisissez "
                        "le premier code.", "Add this key to your authenticator app, then enter "
                        "the first code."),
    "totp.code": ("Code", "Code"),
    "totp.submit": ("Valider", "Verify"),
    "totp.wrong": ("Code incorrect.", "Wrong code."),
    "floor.title": ("Plateau", "Floor"),
    "floor.online": ("en ligne", "online"),
    "floor.seats": ("postes", "seats"),
    "floor.in_call": ("en appel", "in call"),
    "floor.latency": ("latence p95", "p95 latency"),
    "floor.messages": ("messages", "messages"),
    "floor.empty": ("Aucun poste n'a encore été vu sur ce site.", "No seat seen on this site yet."),
    "floor.all_teams": ("Toutes les équipes", "All teams"),
    "floor.all_campaigns": ("Toutes les campagnes", "All campaigns"),
    "floor.pseudonymous": ("Mode pseudonyme", "Pseudonymous mode"),
    "floor.pseudo_default": ("Pseudonyme par défaut", "Pseudonymous by default"),
    "floor.save": ("Enregistrer", "Save"),
    "state.agent": ("Agent parle", "Agent speaking"),
    "state.prospect": ("Prospect parle", "Prospect speaking"),
    "state.overlap": ("Chevauchement", "Overlap"),
    "state.silence": ("Silence", "Silence"),
    "state.offline": ("Hors ligne", "Offline"),
    "state.private": ("Appel privé", "Private call"),
    "state.unknown": ("—", "—"),
    "online.online": ("En ligne", "Online"),
    "online.offline": ("Hors ligne", "Offline"),
    "online.unknown": ("État inconnu", "Unknown state"),
    "live.up": ("En direct", "Live"),
    "live.down": ("Déconnecté", "Disconnected"),
    "seat.updated": ("Mis à jour", "Updated"),
    "seat.ago": ("il y a", ""),
    "seat.never": ("jamais vu", "never seen"),
    "seat.fatigue": ("Fatigue", "Fatigue"),
    "seat.open": ("Ouvrir", "Open"),
    "agent.title": ("Agent", "Agent"),
    "agent.seat": ("Poste", "Seat"),
    "agent.team": ("Équipe", "Team"),
    "agent.shift": ("Le poste de travail en courbes", "The shift as charts"),
    "agent.no_data": ("Pas encore de mesures.", "No measurements yet."),
    "agent.cues": ("Signaux", "Cues"),
    "agent.calls": ("Appels", "Calls"),
    "agent.no_calls": ("Aucun appel enregistré.", "No call recorded."),
    "agent.flags": ("Moments signalés", "Flagged moments"),
    "agent.no_flags": ("Aucun moment signalé.", "No flagged moment."),
    "agent.flag": ("Signaler ce moment", "Flag this moment"),
    "agent.moment": ("Moment", "Moment"),
    "agent.note": ("Note", "Note"),
    "agent.share": ("Partager avec l'équipe", "Share with the team"),
    "agent.goals": ("Objectifs", "Goals"),
    "agent.no_goals": ("Aucun objectif.", "No goal."),
    "agent.goal_metric": ("Mesure", "Metric"),
    "agent.goal_label": ("Objectif", "Goal"),
    "agent.goal_down": ("baisser", "lower"),
    "agent.goal_up": ("augmenter", "raise"),
    "agent.goal_add": ("Fixer l'objectif", "Set the goal"),
    "agent.audit": ("Qui a consulté mes données", "Who looked at my data"),
    "agent.audit_admin": ("Consultations de ces données", "Reads of this data"),
    "agent.no_audit": ("Personne n'a consulté ces données.", "Nobody has looked at this data."),
    "agent.private": ("Appel privé", "Private call"),
    "agent.private_on": ("Passer en appel privé", "Switch to private call"),
    "agent.private_off": ("Fin de l'appel privé", "End private call"),
    "agent.private_is_on": ("Mode privé actif : rien n'est mesuré.",
                            "Private mode on: nothing is measured."),
    "agent.live": ("Mes signaux en direct", "My live cues"),
    "agent.export": ("Exporter (CSV)", "Export (CSV)"),
    "agent.export_all": ("Toutes mes données (JSON)", "All my data (JSON)"),
    "agent.replay": ("Rejouer", "Replay"),
    "agent.outcome": ("Issue", "Outcome"),
    "agent.tag": ("Enregistrer", "Save"),
    "agent.by": ("par", "by"),
    "outcome.meeting": ("Rendez-vous", "Meeting booked"),
    "outcome.callback": ("À rappeler", "Call back"),
    "outcome.refusal": ("Refus", "Refusal"),
    "outcome.no_answer": ("Pas de réponse", "No answer"),
    "outcome.none": ("—", "—"),
    "audit.title": ("Journal d'audit", "Audit log"),
    "audit.when": ("Quand", "When"),
    "audit.who": ("Qui", "Who"),
    "audit.role": ("Rôle", "Role"),
    "audit.agent": ("Agent", "Agent"),
    "audit.action": ("Action", "Action"),
    "audit.aggregates": ("Moyennes par équipe", "Team averages"),
    "audit.metric": ("Mesure", "Metric"),
    "audit.mean": ("Moyenne", "Mean"),
    "audit.agents": ("Agents", "Agents"),
    "action.view_agent": ("a ouvert la vue agent", "opened the agent view"),
    "action.read_metrics": ("a consulté les mesures", "read the metrics"),
    "action.moment_replay": ("a rejoué un moment", "replayed a moment"),
    "action.read_flags": ("a consulté les moments signalés", "read the flagged moments"),
    "action.read_goals": ("a consulté les objectifs", "read the goals"),
    "action.read_calls": ("a consulté les appels", "read the calls"),
    "action.export_csv": ("a exporté les mesures", "exported the metrics"),
    "action.export_all": ("a exporté toutes les données", "exported all data"),
    "action.erase": ("a effacé les données", "erased the data"),
    "action.floor": ("a ouvert le plateau", "opened the floor"),
    "action.team_board": ("a ouvert le tableau d'équipe", "opened the team board"),
    "action.settings": ("a modifié les réglages", "changed the settings"),
    "team.title": ("Tableau d'équipe", "Team board"),
    "team.help": ("Progrès de chacun par rapport à sa propre référence — pas un classement.",
                  "Each agent's progress against their own baseline — not a ranking."),
    "team.progress": ("Progrès", "Progress"),
    "team.no_baseline": ("référence en cours", "baseline pending"),
    "team.shared": ("Appels remarquables", "Remarkable calls"),
    "team.debrief": ("Débrief du jour", "Daily debrief"),
    "team.calls": ("appels", "calls"),
    "team.meetings": ("rendez-vous", "meetings"),
    "team.flags": ("moments signalés", "flagged moments"),
    "team.export": ("Exporter l'équipe (CSV)", "Export the team (CSV)"),
    "campaign.title": ("Campagnes", "Campaigns"),
    "campaign.variant": ("Variante", "Variant"),
    "campaign.calls": ("Appels qualifiés", "Tagged calls"),
    "campaign.rate": ("Taux de rendez-vous", "Meeting rate"),
    "campaign.ci": ("Intervalle de confiance à 95 %", "95 % confidence interval"),
    "campaign.none": ("Aucune campagne.", "No campaign."),
    "campaign.compare": ("Comparaison des variantes", "Variant comparison"),
    "chart.cue": ("signal", "cue"),
    "chart.turns": ("Tours de parole", "Turn-taking"),
    "chart.flag": ("moment signalé", "flagged moment"),
    "chart.click": ("Cliquez sur une courbe pour choisir le moment.",
                    "Click a chart to pick the moment."),
}

# Strings the page scripts need (passed as a JSON data block, never as inline script).
CLIENT_KEYS = [k for k in STRINGS if k.split(".")[0] in
               ("state", "online", "live", "seat", "chart", "agent")]


def translate(lang: str, key: str) -> str:
    """The string ``key`` in ``lang`` (French when unknown; the key itself when missing)."""
    pair = STRINGS.get(key)
    if pair is None:
        return key
    return pair[1] if lang == "en" else pair[0]


def translator(lang: str) -> Callable[[str], str]:
    """A one-argument ``t(key)`` for templates."""
    return lambda key: translate(lang, key)


def client_json(lang: str) -> str:
    """The strings and cue labels the page scripts need, as JSON."""
    data = {k: translate(lang, k) for k in CLIENT_KEYS}
    data.update({f"cue.{name}": registry.cue_label(name, lang) for name in registry.CUES})
    data["lang"] = lang
    return json.dumps(data, ensure_ascii=False).replace("</", "<\\/")
