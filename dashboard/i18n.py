"""Interface strings in French (default) and English, chosen per user."""

from __future__ import annotations

import json
import re
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
    "nav.skip": ("Aller au contenu", "Skip to content"),
    "lang.other": ("English", "Français"),
    "login.title": ("Connexion", "Log in"),
    "login.user": ("Identifiant", "Username"),
    "login.password": ("Mot de passe", "Password"),
    "login.submit": ("Se connecter", "Log in"),
    "login.expired": ("Session expirée, veuillez réessayer.", "Session expired, please retry."),
    "login.wrong": ("Identifiant ou mot de passe incorrect.", "Wrong username or password."),
    "login.ended": ("Votre session a pris fin : reconnectez-vous. Si votre identifiant est refusé, "
                    "votre compte a pu être retiré ou désactivé : adressez-vous à votre "
                    "responsable.", "Your session ended: log in again. If your username is "
                    "refused, your account may have been removed or disabled: ask your manager."),
    "login.throttled": ("Trop de tentatives. Réessayez plus tard.",
                        "Too many attempts. Try again later."),
    "login.busy": ("Trop de connexions en même temps. Réessayez dans un instant.",
                   "Too many logins at once. Try again in a moment."),
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
    "totp.enrolled": ("La double authentification de ce compte est déjà activée : "
                      "connectez-vous avec le code de votre application.",
                      "Two-factor authentication is already set up for this account: "
                      "log in with the code from your app."),
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
    "state.restarting": ("Redémarrage", "Restarting"),
    "state.private": ("Appel privé", "Private call"),
    "state.no_capture": ("Pas de casque / capture perdue", "No headset / capture lost"),
    "state.hold": ("En attente", "On hold"),
    "state.unknown": ("—", "—"),
    "me.state.agent": ("Vous parlez", "You are speaking"),
    "me.state.prospect": ("Le prospect parle", "The prospect is speaking"),
    "me.state.overlap": ("Vous parlez en même temps", "You are both speaking"),
    "me.state.offline": ("Votre boîtier est hors ligne", "Your box is offline"),
    "me.state.restarting": ("Votre boîtier redémarre", "Your box is restarting"),
    "me.state.no_capture": ("Votre casque n'est pas capté", "Your headset is not picked up"),
    "online.online": ("En ligne", "Online"),
    "online.offline": ("Hors ligne", "Offline"),
    "online.restarting": ("Redémarrage", "Restarting"),
    "online.unknown": ("État inconnu", "Unknown state"),
    "live.up": ("En direct", "Live"),
    "live.down": ("Déconnecté", "Disconnected"),
    "seat.updated": ("Mis à jour", "Updated"),
    "seat.never": ("jamais vu", "never seen"),
    "seat.fatigue": ("Fatigue", "Fatigue"),
    "seat.bars_30s": ("Parole, 30 dernières s", "Speech, last 30 s"),
    "seat.bars_1s": ("Parole, dernière seconde", "Speech, last second"),
    "seat.bars_hold": ("En attente", "On hold"),
    "agent.title": ("Agent", "Agent"),
    "agent.seat": ("Poste", "Seat"),
    "agent.team": ("Équipe", "Team"),
    "agent.shift": ("Le poste de travail en courbes", "The shift as charts"),
    "agent.no_data": ("Pas encore de mesures.", "No measurements yet."),
    "agent.no_data_private": ("Appel privé : rien n'est mesuré pendant ce temps.",
                              "Private call: nothing is measured meanwhile."),
    "agent.no_data_offline": ("Boîtier hors ligne.", "Box offline."),
    "agent.no_data_offline_since": ("Boîtier hors ligne depuis {time}.", "Box offline since {time}."),
    "agent.no_data_restarting": ("Boîtier en redémarrage (mise à jour ou réglages) depuis {time}.",
                                 "Box restarting (an update or new settings) since {time}."),
    "agent.fatigue_factors": ("Ce qui fait monter la fatigue (écart à sa propre voix de début de "
                              "poste, en erreurs types) :",
                              "What drives the fatigue up (drift from the agent's own voice at the "
                              "start of the shift, in standard errors):"),
    "agent.no_factor": ("rien au-delà du bruit de mesure", "nothing beyond measurement noise"),
    "agent.no_values": ("Sans mesure sur cette période", "Not measured in this period"),
    "agent.why_no_signal_near": ("Casque sans signal (débranché, coupé ou en panne)",
                                 "No signal from the headset (unplugged, muted or broken)"),
    "agent.why_no_signal_far": ("Ligne sans signal (adaptateur débranché ou en panne)",
                                "No signal from the line (adapter unplugged or broken)"),
    "agent.why_little_speech": ("Trop peu de parole sur cette période pour les calculer",
                                "Too little speech in this period to compute them"),
    "agent.why_on_hold": ("En attente : l'appel était en attente sur toute cette période",
                          "On hold: the call was on hold throughout this period"),
    "agent.why_fatigue_baseline": ("Calculée une fois apprise la voix de l'agent en début de "
                                   "poste (5 minutes de voix par défaut)",
                                   "Computed once the agent's voice at the start of the shift is "
                                   "learned (5 minutes of voice by default)"),
    "agent.why_affect_off": ("Analyse du prospect non activée sur ce boîtier",
                             "Prospect analysis not enabled on this box"),
    "agent.why_affect_undisclosed": ("Analyse du prospect arrêtée : la campagne ne l'annonce pas "
                                     "au prospect", "Prospect analysis off: the campaign does "
                                     "not disclose it to the prospect"),
    "agent.why_affect_blocked": ("Analyse du prospect bloquée : le contrôle d'installation n'a "
                                 "pas confirmé le canal de l'agent", "Prospect analysis blocked: "
                                 "the install check did not confirm the agent's channel"),
    "agent.why_affect_failed": ("Analyse du prospect arrêtée : son modèle n'a pas pu être chargé",
                                "Prospect analysis off: its model could not be loaded"),
    "agent.truncated": ("Trop de mesures pour les montrer toutes : les courbes commencent à",
                        "Too many measurements to show them all: the charts start at"),
    "agent.calls": ("Appels", "Calls"),
    "agent.call_start": ("Début", "Start"),
    "agent.call_campaign": ("Campagne", "Campaign"),
    "agent.call_duration": ("Durée", "Duration"),
    "agent.call_outcome": ("Issue", "Outcome"),
    "agent.outcome_frozen": ("(campagne clôturée : issue figée)",
                             "(campaign closed: outcome frozen)"),
    "agent.no_calls": ("Aucun appel enregistré.", "No call recorded."),
    "agent.no_cti_calls": ("Aucun appel reçu du système téléphonique (CTI), qui compte les appels "
                           "et leurs issues ; le boîtier de l'agent en a détecté",
                           "No call received from the phone system (CTI), which counts the calls "
                           "and their outcomes; the agent's box detected"),
    "me.no_cti_calls": ("Aucun appel reçu du système téléphonique (CTI), qui compte les appels "
                        "et leurs issues ; votre boîtier en a détecté",
                        "No call received from the phone system (CTI), which counts the calls "
                        "and their outcomes; your box detected"),
    "agent.calls_older": ("Appels plus anciens ({n})", "Older calls ({n})"),
    "agent.calls_range": ("Appels {first} à {last} sur {total} (tous dans l'export CSV)",
                          "Calls {first} to {last} of {total} (all in the CSV export)"),
    "agent.calls_next": ("Plus anciens →", "Older →"),
    "agent.calls_latest": ("« Les plus récents", "« Latest"),
    "agent.calls_newer": ("← Plus récents", "← Newer"),
    "agent.flags": ("Moments signalés", "Flagged moments"),
    "agent.no_flags": ("Aucun moment signalé.", "No flagged moment."),
    "agent.flags_range": ("Moments signalés {first} à {last} sur {total}",
                          "Flagged moments {first} to {last} of {total}"),
    "agent.flags_older": ("Plus anciens →", "Older →"),
    "agent.flags_newer": ("← Plus récents", "← Newer"),
    "agent.flags_latest": ("« Les plus récents", "« Latest"),
    "agent.flag": ("Signaler ce moment", "Flag this moment"),
    "agent.moment": ("Moment", "Moment"),
    "agent.moment_hint": ("(hh:mm:ss, à votre heure)", "(hh:mm:ss, your time)"),
    "agent.moment_invalid": ("Heure du moment illisible : écrivez-la hh:mm:ss (par exemple "
                             "14:05:30).", "The moment's time cannot be read: write it hh:mm:ss "
                             "(for example 14:05:30)."),
    "agent.note": ("Note (facultative)", "Note (optional)"),
    "agent.flag_no_note": ("(sans note)", "(no note)"),
    "agent.share": ("Partager avec l'équipe", "Share with the team"),
    "agent.goals": ("Objectifs", "Goals"),
    "agent.no_goals": ("Aucun objectif.", "No goal."),
    "agent.goal_metric": ("Mesure", "Metric"),
    "agent.goal_label": ("Nom de l'objectif", "Goal's name"),
    "agent.goal_placeholder": ("ex. : ralentir le débit", "e.g. slow down"),
    "agent.goal_direction": ("Sens", "Direction"),
    "agent.goal_unnamed": ("Objectif non fixé : donnez-lui un nom.",
                           "Goal not set: give it a name."),
    "agent.goal_metric_refused": ("Objectif non fixé : la moyenne du jour de cette mesure ne dit "
                                  "rien de l'agent (la voix du prospect, un cumul, l'instant).",
                                  "Goal not set: this metric's daily mean says nothing of the "
                                  "agent (the prospect's voice, a running total, the moment)."),
    "agent.goal_down": ("baisser", "lower"),
    "agent.goal_up": ("augmenter", "raise"),
    "agent.days": ("j", "d"),
    "agent.goal_figures": ("de {first} à {last} en {days} j", "from {first} to {last} over {days} d"),
    "agent.goal_figure": ("{value} sur 1 j", "{value} over 1 d"),
    "agent.goal_trend": ("{metric}, {days} jours : de {first} à {last}",
                         "{metric}, {days} days: from {first} to {last}"),
    "agent.goal_add": ("Fixer l'objectif", "Set the goal"),
    "agent.audit": ("Qui a consulté mes données", "Who looked at my data"),
    "agent.audit_admin": ("Consultations de ces données", "Reads of this data"),
    "agent.no_audit": ("Personne n'a consulté ces données en détail.",
                       "Nobody has looked at this data in detail."),
    "agent.audit_scope": ("Sont journalisés : votre page, ses graphiques, ses exports et le tableau "
                          "d'équipe, et ce qui est fait de vos données et de votre compte "
                          "(moments signalés, objectifs, campagnes, poste, compte). Le plan de "
                          "salle en direct, qui montre l'état de votre poste (parle, écoute, "
                          "privé) et vos alertes, ne l'est pas.",
                          "Logged here: your page, its charts, its exports and the team board, and "
                          "what is done with your data and your account (flagged moments, goals, "
                          "campaigns, seat, account). The live floor, which shows your seat's "
                          "state (talking, listening, private) and your cues, is not."),
    "agent.audit_scope_admin": ("Sont journalisés : la page de l'agent, ses graphiques, ses exports "
                                "et le tableau d'équipe, et ce qui est fait de ses données et de "
                                "son compte (moments signalés, objectifs, campagnes, poste, "
                                "compte). Le plan de salle en direct, qui montre l'état de son "
                                "poste (parle, écoute, privé) et ses alertes, ne l'est pas.",
                                "Logged here: the agent's page, its charts, its exports and the "
                                "team board, and what is done with the agent's data and account "
                                "(flagged moments, goals, campaigns, seat, account). The live "
                                "floor, which shows the seat's state (talking, listening, "
                                "private) and the agent's cues, is not."),
    "agent.audit_summary": ("Qui, quoi, combien de fois", "Who, what, how many times"),
    "agent.audit_times": ("Nombre de fois", "How many times"),
    "agent.audit_count": ("{n} entrées du journal", "{n} log entries"),
    "agent.audit_count_one": ("1 entrée du journal", "1 log entry"),
    "agent.audit_count_part": ("{n} des {total} entrées du journal", "{n} of {total} log entries"),
    "agent.audit_grouped": (", regroupées par visite en {lines} lignes",
                            ", grouped by visit into {lines} lines"),
    "agent.audit_grouped_one": (", regroupées par visite en 1 ligne",
                                ", grouped by visit into 1 line"),
    "agent.audit_last": ("Dernière fois", "Last time"),
    "agent.audit_entries": ("Une à une, les plus récentes d'abord",
                            "One by one, the newest first"),
    "agent.audit_older": ("Plus anciennes →", "Older →"),
    "agent.audit_newer": ("← Plus récentes", "← Newer"),
    "agent.audit_latest": ("« Les plus récentes", "« Latest"),
    "agent.private": ("Appel privé", "Private call"),
    "agent.private_on": ("Passer en appel privé", "Switch to private call"),
    "agent.private_off": ("Fin de l'appel privé", "End private call"),
    "agent.private_is_on": ("Mode privé actif : rien n'est mesuré.",
                            "Private mode on: nothing is measured."),
    "agent.private_help": ("Dès que vous passez en appel privé, votre boîtier ne mesure et "
                           "n'envoie plus rien de l'appel : votre responsable voit seulement que "
                           "le poste est en privé. Le bouton du boîtier fait de même.",
                           "From the moment you switch to a private call, your box measures and "
                           "sends nothing more of the call: your supervisor only sees that the "
                           "seat is private. The box's button does the same."),
    "agent.private_unsent": ("Votre boîtier n'a pas pu être joint : utilisez son bouton.",
                             "Your box could not be reached: use its button."),
    "agent.private_no_seat": ("Aucun poste ne vous est attribué : il n'y a pas de boîtier à "
                              "passer en appel privé. Les postes sont attribués par le service "
                              "informatique.",
                              "No seat is assigned to you: there is no box to switch to a private "
                              "call. Site IT assigns the seats."),
    "agent.live": ("Mes signaux en direct", "My live cues"),
    "agent.live_seat": ("Au poste, en direct :", "At the seat, live:"),
    "agent.gone": ("Cet agent a été retiré ou n'est plus dans votre périmètre : cette page ne "
                   "se met plus à jour.", "This agent was removed or is no longer in your scope: "
                   "this page no longer updates."),
    "agent.export": ("Exporter (CSV)", "Export (CSV)"),
    "agent.export_excel": ("Exporter pour Excel", "Export for Excel"),
    "agent.export_all": ("Toutes mes données (JSON)", "All my data (JSON)"),
    "agent.back_live": ("Retour au direct", "Back to live"),
    "agent.replay": ("Rejouer", "Replay"),
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
    "role.admin": ("Administrateur", "Admin"),
    "role.supervisor": ("Superviseur", "Supervisor"),
    "role.agent": ("Agent", "Agent"),
    "role.auditor": ("Auditeur", "Auditor"),
    "role.it": ("Informatique", "IT"),
    "audit.withheld": ("non montrée : trop peu d'agents", "withheld: too few agents"),
    "action.view_agent": ("a ouvert la page de l'agent", "opened the agent's page"),
    "action.read_metrics": ("a consulté les mesures", "read the metrics"),
    "action.live_view": ("a suivi les mesures en direct", "followed the metrics live"),
    "visit.with": (", avec ", ", with "),
    "visit.and": (" et ", " and "),
    "visit.read_metrics": ("ses graphiques", "its charts"),
    "visit.live_view": ("son suivi en direct", "its live view"),
    # the same, as the agent reads them on their own page (``me.`` + the key above)
    "me.action.view_agent": ("a ouvert votre page", "opened your page"),
    "me.visit.read_metrics": ("vos graphiques", "your charts"),
    "me.visit.live_view": ("votre suivi en direct", "your live view"),
    "action.moment_replay": ("a rejoué un moment", "replayed a moment"),
    "action.read_flags": ("a consulté les moments signalés", "read the flagged moments"),
    "action.read_goals": ("a consulté les objectifs", "read the goals"),
    "action.read_calls": ("a consulté les appels", "read the calls"),
    "action.export_csv": ("a exporté les mesures", "exported the metrics"),
    "action.export_all": ("a exporté toutes les données", "exported all data"),
    "action.erase": ("a effacé les données", "erased the data"),
    "action.floor": ("a ouvert le plateau", "opened the floor"),
    "action.team_board": ("a ouvert le tableau d'équipe", "opened the team board"),
    "action.read_team_means": ("a consulté les moyennes de l'équipe, faites de ses données "
                               "(et de celles d'un autre agent au plus)",
                               "read the team's means, made of their data (and of one other "
                               "agent's at most)"),
    "me.action.read_team_means": ("a consulté les moyennes de votre équipe, faites de vos "
                                  "données (et de celles d'un autre agent au plus)",
                                  "read your team's means, made of your data (and of one other "
                                  "agent's at most)"),
    "action.read_variant_results": ("a consulté les résultats d'une variante de campagne, faits de "
                                    "ses appels (et de ceux d'un autre agent au plus)",
                                    "read a campaign variant's results, made of their calls (and "
                                    "of one other agent's at most)"),
    "me.action.read_variant_results": ("a consulté les résultats d'une variante de campagne, "
                                       "faits de vos appels (et de ceux d'un autre agent au plus)",
                                       "read a campaign variant's results, made of your calls "
                                       "(and of one other agent's at most)"),
    "action.settings": ("a modifié les réglages", "changed the settings"),
    "team.title": ("Tableau d'équipe", "Team board"),
    "team.help": ("Progrès de chacun par rapport à sa propre référence — pas un classement.",
                  "Each agent's progress against their own baseline — not a ranking."),
    "team.progress": ("Progrès", "Progress"),
    "team.no_baseline": ("référence en cours", "baseline pending"),
    "team.shared": ("Appels remarquables", "Remarkable calls"),
    "team.no_shared": ("Aucun moment partagé : un moment signalé sur la page d'un agent, "
                       "« Partager avec l'équipe » coché, apparaît ici.",
                       "No shared moment: a moment flagged on an agent's page with \"Share with "
                       "the team\" ticked shows here."),
    "team.debrief": ("Débrief des dernières 24 h", "Debrief of the last 24 h"),
    "team.calls_one": ("appel", "call"),
    "team.calls": ("appels", "calls"),
    "team.no_cti_calls": ("Aucun appel reçu du système téléphonique (CTI), qui compte les appels et "
                          "leurs rendez-vous ; les boîtiers de l'équipe en ont détecté",
                          "No call received from the phone system (CTI), which counts the calls "
                          "and their meetings; the team's boxes detected"),
    "team.no_cti_calls_end": (" depuis 24 h.", " in the last 24 h."),
    "team.meetings_one": ("rendez-vous", "meeting"),
    "team.meetings": ("rendez-vous", "meetings"),
    "team.flags_one": ("moment signalé", "flagged moment"),
    "team.flags": ("moments signalés", "flagged moments"),
    "team.export": ("Exporter l'équipe (CSV)", "Export the team (CSV)"),
    "team.export_excel": ("Exporter l'équipe pour Excel", "Export the team for Excel"),
    "campaign.title": ("Campagnes", "Campaigns"),
    "campaign.variant": ("Variante", "Variant"),
    "campaign.calls": ("Appels qualifiés", "Tagged calls"),
    "campaign.rate": ("Taux de rendez-vous", "Meeting rate"),
    "campaign.ci": ("Intervalle de confiance à 95 %", "95 % confidence interval"),
    "campaign.no_tagged_calls": ("Aucun appel qualifié pour l'instant : un appel compte ici une "
                                 "fois enregistré par le système téléphonique (CTI) et son issue "
                                 "saisie dans la liste des appels de la page de l'agent.",
                                 "No tagged call yet: a call counts here once the phone system "
                                 "(CTI) has recorded it and its outcome is set in the calls list "
                                 "of the agent's page."),
    "campaign.no_agents": ("Aucun agent n'est affecté à cette campagne.",
                           "No agent is assigned to this campaign."),
    "campaign.none": ("Aucune campagne.", "No campaign."),
    "campaign.range": ("Campagnes {first} à {last} sur {total} : en cours d'abord, puis les "
                       "dernières clôturées",
                       "Campaigns {first} to {last} of {total}: running first, then the latest "
                       "closed"),
    "campaign.past_end": ("Aucune campagne à cette page ({total} en tout).",
                          "No campaign on this page ({total} in all)."),
    "campaign.older": ("Plus anciennes →", "Older →"),
    "campaign.newer": ("← Plus récentes", "← Newer"),
    "campaign.compare": ("Comparaison des variantes", "Variant comparison"),
    "campaign.create": ("Nouvelle campagne", "New campaign"),
    "campaign.id": ("Identifiant (a-z, 0-9, -)", "Id (a-z, 0-9, -)"),
    "campaign.name": ("Nom", "Name"),
    "campaign.team": ("Équipe", "Team"),
    "campaign.no_team": ("Toutes les équipes", "All teams"),
    "campaign.variants": ("Variantes, une par ligne : Nom | texte",
                          "Variants, one per line: Name | text"),
    "campaign.submit": ("Créer la campagne", "Create the campaign"),
    "campaign.variant_name": ("Nom de la variante", "Variant name"),
    "campaign.variant_text": ("Accroche ou argumentaire", "Opener or pitch"),
    "campaign.add": ("Ajouter", "Add"),
    "campaign.assign": ("Affecter un agent", "Assign an agent"),
    "campaign.assign_submit": ("Affecter", "Assign"),
    "campaign.no_variant": ("sans variante", "no variant"),
    "campaign.close": ("Clôturer la campagne", "Close the campaign"),
    "campaign.close_confirm": ("Je confirme : une campagne clôturée ne peut pas être rouverte, "
                               "ses agents la quittent et l'issue de ses appels est figée",
                               "I confirm: a closed campaign cannot be reopened, its agents "
                               "leave it and its calls' outcomes are frozen"),
    "campaign.closed": ("Clôturée", "Closed"),
    "campaign.open": ("En cours", "Running"),
    "campaign.invalid": ("Campagne invalide : vérifiez l'identifiant, le nom et les variantes.",
                         "Invalid campaign: check the id, the name and the variants."),
    "campaign.refused": ("Campagne non créée :", "Campaign not created:"),
    "campaign.variant_refused": ("Variante non ajoutée :", "Variant not added:"),
    "error.title": ("La demande n'a pas abouti", "The request did not go through"),
    "error.bad": ("La demande est mal formée.", "The request is malformed."),
    "error.method": ("Cette adresse est celle d'un bouton de la page (Déconnexion, Clôturer…) : "
                     "utilisez le bouton, pas la barre d'adresse.",
                     "This address belongs to a button of the page (Log out, Close…): use the "
                     "button, not the address bar."),
    "error.forbidden": ("Accès refusé : rechargez la page et réessayez.",
                        "Access refused: reload the page and try again."),
    "error.not_found": ("Introuvable : cet élément n'existe pas ou n'est pas de votre périmètre.",
                        "Not found: it does not exist or is outside what you can see."),
    "error.conflict": ("Impossible dans l'état actuel (déjà fait, nom déjà pris, ou clôturé).",
                       "Not possible as things stand (already done, name taken, or closed)."),
    "error.too_large": ("La demande est trop volumineuse.", "The request is too large."),
    "error.invalid": ("Formulaire incomplet ou invalide : vérifiez les champs.",
                      "Incomplete or invalid form: check the fields."),
    "error.other": ("Une erreur s'est produite.", "Something went wrong."),
    "error.detail": ("Détail technique", "Technical detail"),
    "error.back": ("Retour", "Back"),
    "campaign.withheld": ("Non montrée : moins de {n} agents derrière cette variante, ses "
                          "chiffres seraient ceux d'agents identifiables.",
                          "Withheld: fewer than {n} agents behind this variant, its figures "
                          "would be identifiable agents' own."),
    "campaign.agents": ("Agents sur cette campagne", "Agents on this campaign"),
    "nav.it": ("Parc des boîtiers", "Box fleet"),
    "it.title": ("Santé du parc", "Fleet health"),
    "it.help": ("Boîtiers classés par gravité des problèmes ; la page se met à jour toute seule, "
                "jamais pendant que vous la parcourez au clavier.",
                "Boxes ranked by how serious their problems are; the page refreshes itself, never "
                "while you move through it with the keyboard."),
    "it.auto_refresh": ("Mise à jour automatique (toutes les {s} s)",
                        "Automatic update (every {s} s)"),
    "it.box": ("Boîtier", "Box"),
    "it.seat": ("Poste", "Seat"),
    "it.problems": ("Problèmes", "Problems"),
    "it.version": ("Version", "Version"),
    "it.last_seen": ("Vu pour la dernière fois", "Last seen"),
    "it.since": ("depuis", "since"),
    "it.ok": ("RAS", "OK"),
    "it.all_ok": ("Aucun problème sur le parc.", "No problem in the fleet."),
    "it.alerts": ("Alertes en cours", "Active alerts"),
    "it.no_alerts": ("Aucune alerte en cours.", "No active alert."),
    "it.history": ("Historique des alertes", "Alert history"),
    "it.raised": ("Début", "Raised"),
    "it.cleared": ("Fin", "Cleared"),
    "it.still_open": ("en cours", "open"),
    "it.no_history": ("Aucune alerte pour l'instant.", "No alert so far."),
    "it.clock_shared": ("Horloge du serveur (boîtier simulé)", "The server's clock (simulated box)"),
    "it.clock_shared_synced": ("synchronisée", "synchronised"),
    "it.clock_shared_unsynced": ("non synchronisée", "not synchronised"),
    "it.reason": ("Cause", "Cause"),
    "it.reason.status": ("déconnexion signalée (Last Will)", "disconnection reported (Last Will)"),
    "it.reason.silent": ("aucun message depuis plus de 30 s", "no message for over 30 s"),
    "it.reason.restart": ("redémarrage annoncé, boîtier pas revenu à temps",
                          "announced restart, box not back in time"),
    "it.restart.update": ("mise à jour", "update"),
    "it.restart.reload": ("réglages rechargés", "settings reloaded"),
    "it.boxes": ("boîtiers", "boxes"),
    "it.with_problems": ("avec problème", "with a problem"),
    "it.site_certs": ("Certificats du site", "Site certificates"),
    "it.cert": ("Certificat", "Certificate"),
    "it.cert_ends": ("Fin de validité", "Valid until"),
    "it.cert_days_left": ("Jours restants", "Days left"),
    "it.cert.ca": ("Autorité du site (CA)", "Site authority (CA)"),
    "it.cert.broker": ("Broker (serveur MQTT)", "Broker (MQTT server)"),
    "it.cert.dashboard": ("Tableau de bord (identité MQTT)", "Dashboard (MQTT identity)"),
    "it.cert.https": ("Tableau de bord (HTTPS)", "Dashboard (HTTPS)"),
    "it.cert_renew": ("à renouveler : miroir provision expiry", "renew: miroir provision expiry"),
    "problem.offline": ("Hors ligne", "Offline"),
    "problem.never_seen": ("Jamais vu", "Never seen"),
    "problem.restarting": ("Redémarrage", "Restarting"),
    "problem.cert_expired": ("Certificat expiré", "Certificate expired"),
    "problem.cert_expiring": ("Certificat bientôt expiré (j)", "Certificate expiring (days)"),
    "problem.flood": ("Trop de messages (par min)", "Message flood (per min)"),
    "problem.capture": ("Casque débranché / capture en échec", "Headset unplugged / capture failing"),
    "problem.outbox": ("File d'envoi chargée", "Outbox backlog"),
    "problem.dropped": ("Messages perdus", "Messages dropped"),
    "problem.fields": ("Valeurs hors plage écartées (bogue du boîtier)",
                       "Out-of-range values left out (a box bug)"),
    "problem.overruns": ("Débordements audio en hausse", "Audio overruns rising"),
    "problem.clock": ("Horloge non synchronisée", "Clock not synchronised"),
    "problem.thermal": ("Surchauffe / bridage CPU", "CPU hot / throttled"),
    "problem.version": ("Ancienne version", "Old software version"),
    "problem.update": ("Mise à jour annulée, version précédente en service",
                       "Update rolled back, previous version running"),
    "problem.settings": ("Fichier de réglages refusé (ancienne version en service)",
                         "Settings file refused (the last good one runs)"),
    "problem.affect": ("Modèle d'affect du prospect arrêté", "Prospect affect model off"),
    "action.campaign_create": ("a créé une campagne", "created a campaign"),
    "action.campaign_close": ("a clôturé une campagne", "closed a campaign"),
    "action.campaign_assign": ("a affecté à une campagne", "assigned to a campaign"),
    "action.campaign_leave": ("a changé l'agent d'équipe, ce qui l'a retiré d'une campagne de "
                              "son ancienne équipe",
                              "moved the agent to another team, taking them off a campaign of "
                              "their former team"),
    "action.variant_create": ("a ajouté une variante", "added a variant"),
    "action.call_create": ("a enregistré un appel", "recorded a call"),
    "action.call_variant": ("a changé la variante d'un appel", "changed a call's variant"),
    "action.call_outcome": ("a indiqué l'issue d'un appel", "set a call's outcome"),
    "action.flag_create": ("a signalé un moment", "flagged a moment"),
    "action.goal_set": ("a fixé un objectif", "set a goal"),
    "action.read_box_metrics": ("a consulté les mesures du poste", "read the seat's metrics"),
    "action.retire_box": ("a retiré un boîtier", "retired a box"),
    "action.user_add": ("a créé un compte", "added an account"),
    "action.user_disable": ("a désactivé un compte", "disabled an account"),
    "action.user_enable": ("a réactivé un compte", "enabled an account"),
    "action.user_reset": ("a réinitialisé un mot de passe et l'authentificateur",
                          "reset a password and the authenticator"),
    "action.assign_seat": ("a attribué le poste", "gave the seat"),
    "action.seat_taken": ("a donné le poste de l'agent à un autre agent (son boîtier y oublie "
                          "les références apprises de sa voix)",
                          "gave the agent's seat to another agent (its box forgets the baselines "
                          "it learned of the agent's voice)"),
    # site IT's acts on an agent's own account, as the agent reads them on their page
    "me.action.assign_seat": ("vous a attribué le poste", "gave you the seat"),
    "me.action.seat_taken": ("a donné votre poste à un autre agent (son boîtier y oublie les "
                             "références apprises de votre voix)",
                             "gave your seat to another agent (its box forgets the baselines it "
                             "learned of your voice)"),
    "me.action.campaign_leave": ("vous a changé d'équipe, ce qui vous a retiré d'une campagne de "
                                 "votre ancienne équipe",
                                 "moved you to another team, taking you off a campaign of your "
                                 "former team"),
    "me.action.user_add": ("a créé votre compte", "added your account"),
    "me.action.user_disable": ("a désactivé votre compte", "disabled your account"),
    "me.action.user_enable": ("a réactivé votre compte", "enabled your account again"),
    "me.action.user_reset": ("a réinitialisé votre mot de passe et votre authentificateur",
                             "reset your password and your authenticator"),
    "chart.turns": ("Tours de parole", "Turn-taking"),
    "chart.flag": ("moment signalé", "flagged moment"),
    "chart.latest": ("dernière valeur", "latest value"),
    "chart.latest_state": ("dernier état", "latest state"),
    "chart.at": ("à", "at"),
    "chart.click": ("Cliquez sur une courbe, ou saisissez l'heure dans « Moment », pour choisir "
                    "le moment.", "Click a chart, or type the time in \"Moment\", to pick the "
                    "moment."),
}

# Strings the page scripts need (passed as a JSON data block, never as inline script).
CLIENT_KEYS = [k for k in STRINGS if k.split(".")[0] in
               ("state", "online", "live", "seat", "chart", "agent") or k.startswith("me.state.")]


def translate(lang: str, key: str) -> str:
    """The string ``key`` in ``lang`` (French when unknown; the key itself when missing)."""
    pair = STRINGS.get(key)
    if pair is None:
        return key
    return pair[1] if lang == "en" else pair[0]


NOUNS_FR = {"agent": "agent", "box": "boîtier", "call": "appel", "campaign": "campagne",
            "flag": "moment signalé", "goal": "objectif", "team": "équipe", "variant": "variante"}
"""What ``access.not_found(what)`` names, in French."""

DETAILS_FR: list[tuple[re.Pattern[str], str]] = [(re.compile(pattern), fr) for pattern, fr in (
    (r"not found", "introuvable"),
    (r"Method Not Allowed", "méthode non permise"),
    (r"(?P<what>\w+) not found", "{what} introuvable"),
    (r"not authenticated", "session terminée : reconnectez-vous"),
    (r"CSRF token missing or wrong", "ce formulaire ne vaut plus pour votre session (renouvelée "
     "depuis, par exemple par une connexion dans un autre onglet)"),
    (r"campaign is closed", "la campagne est clôturée"),
    (r"closing a campaign needs its confirmation box ticked",
     "cochez la case de confirmation pour clôturer la campagne"),
    (r"campaign id already used", "cet identifiant de campagne est déjà pris"),
    (r"a supervisor's campaign needs a team", "la campagne d'un superviseur doit avoir une équipe"),
    (r"variant names must be distinct", "les variantes doivent avoir des noms différents"),
    (r"a variant has that name already", "une variante porte déjà ce nom"),
    (r"a variant needs a name", "une variante doit avoir un nom"),
    (r"at most (?P<n>.+) variants", "{n} variantes au plus"),
    (r"variant must be an id", "la variante doit être un identifiant"),
    (r"variant is not one of (this|the) campaign's", "cette variante n'est pas de la campagne"),
    (r"the agent is not in the campaign's team", "cet agent n'est pas de l'équipe de la campagne"),
    (r"unknown metric (?P<name>.+)", "mesure inconnue : {name}"),
    (r"metric (?P<name>.+) cannot be a goal: its daily mean says nothing of the agent's",
     "la mesure {name} ne peut être un objectif : sa moyenne du jour ne dit rien de l'agent"),
    (r"unknown box (?P<box>.+)", "boîtier inconnu : {box}"),
    (r"outcome must be one of (?P<names>.+)", "l'issue doit être l'une de {names}"),
    (r"no such box or seated agent", "aucun boîtier ni agent à ce poste"),
    (r"unauthorized", "non autorisé"),
    (r"the broker is not reachable: send it again",
     "le broker MQTT est injoignable : renvoyez la demande"),
    (r"at most (?P<n>.+) live streams per user", "{n} flux en direct au plus par utilisateur"),
    (r"too many live streams open", "trop de flux en direct ouverts"),
    (r"too many call states: at most (?P<n>.+) at once, then (?P<r>.+) a second",
     "trop d'états d'appel : {n} d'un coup au plus, puis {r} par seconde"),
    (r"Content Too Large", "contenu trop volumineux"),
    (r"send the call state as JSON, with the header Content-Type: application/json",
     "envoyez l'état d'appel en JSON, avec l'en-tête Content-Type: application/json"),
    (r"a flagged moment cannot be more than a day ahead of the dashboard's clock",
     "un moment signalé ne peut être plus d'un jour après l'heure du tableau de bord"),
    (r"a call cannot start or end more than a day ahead of the dashboard's clock",
     "un appel ne peut commencer ni finir plus d'un jour après l'heure du tableau de bord"),
)]
"""The French of each error detail the API gives (in English, for its clients), by pattern."""


def detail(lang: str, text: str) -> str:
    """An API error's ``detail`` (English) as a user of ``lang`` reads it; as is if unknown."""
    if lang == "en":
        return text
    for pattern, fr in DETAILS_FR:
        m = pattern.fullmatch(text)
        if m:
            values = m.groupdict()
            if "what" in values:
                values["what"] = NOUNS_FR.get(values["what"], values["what"])
            return fr.format(**values)
    return text


def translator(lang: str) -> Callable[[str], str]:
    """A one-argument ``t(key)`` for templates."""
    return lambda key: translate(lang, key)


def client_json(lang: str) -> str:
    """The strings and cue labels the page scripts need, as JSON."""
    data = {k: translate(lang, k) for k in CLIENT_KEYS}
    data.update({f"cue.{name}": registry.cue_label(name, lang) for name in registry.CUES})
    data.update({f"cue_evidence.{name}.{unit}": en if lang == "en" else fr
                 for name, (unit, fr, en) in registry.CUE_EVIDENCE.items()})
    data["lang"] = lang
    return json.dumps(data, ensure_ascii=False).replace("</", "<\\/")
