"""Adds the label example.com/team to job pods, from its own configuration section."""

from webhook import ConfigError, hookimpl


@hookimpl
def config_defaults():
    return {"team_labels": {"team": "data-platform"}}


@hookimpl
def config_from_environ(environ):
    team = environ.get("PODMUTATE_EXAMPLE_TEAM")
    return {"team_labels": {"team": team}} if team else None


@hookimpl
def parse_config(config):
    team = config.section("team_labels")["team"]
    if not isinstance(team, str) or not team:
        raise ConfigError("team_labels.team", team, "a team name")
    return team


@hookimpl
def mutate_pod(pod, config):
    pod["metadata"].setdefault("labels", {}).setdefault("example.com/team", config.settings["team_labels"])
