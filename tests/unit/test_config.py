import pytest

from edgekd.config import ConfigError, env_overrides, load_settings, mqtt_settings


def write(tmp_path, text):
    p = tmp_path / "edgekd.toml"
    p.write_text(text)
    return p


def error(**kw) -> str:
    with pytest.raises(ConfigError) as exc:
        load_settings(environ={}, **kw)
    return str(exc.value)


def test_defaults_without_a_file():
    s = load_settings(environ={})
    assert s.audio.source == "mic" and s.defaults.mode == "all" and s.stats_interval == 10
    assert s.device_id and "/" not in s.device_id and "+" not in s.device_id and " " not in s.device_id


def test_file_then_environment_then_flags(tmp_path):
    cfg = write(tmp_path, 'device_id = "file"\nthreads = 2\n[audio]\nsource = "a.wav"\n[mqtt]\nurl = "mqtt://file:1883"\n')
    s = load_settings(cfg, environ={"EDGEKD_DEVICE_ID": "env", "EDGEKD_MQTT__USERNAME": "u", "EDGEKD_MQTT__PASSWORD": "secret"})
    assert (s.device_id, s.threads, s.audio.source) == ("env", 2, "a.wav")
    assert s.mqtt == {"url": "mqtt://file:1883", "username": "u", "password": "secret"}
    s = load_settings(cfg, {"device_id": "flag", "audio": {"rate": 8000}}, environ={"EDGEKD_DEVICE_ID": "env"})
    assert (s.device_id, s.audio.source, s.audio.rate) == ("flag", "a.wav", 8000)


def test_environment_variables_that_are_not_config_are_ignored():
    assert env_overrides({"EDGEKD_DATA": "/x", "EDGEKD_MODELS": "/m", "HOME": "/h", "EDGEKD_THREADS": "3"}) == {"threads": "3"}


def test_unknown_key_is_refused_naming_it_and_the_allowed_keys(tmp_path):
    msg = error(config_file=write(tmp_path, "[audio]\nsorce = 'mic'\n"))
    assert "audio.sorce: unknown key" in msg and "source" in msg and "realtime" in msg
    assert "colour: unknown key" in error(overrides={"colour": "red"})


def test_bad_value_names_the_key_and_the_allowed_values(tmp_path):
    msg = error(config_file=write(tmp_path, "[defaults]\nmode = 'sometimes'\n"))
    assert "defaults.mode" in msg and "'all' or 'events'" in msg and "sometimes" in msg
    assert "models[0].hop" in error(overrides={"models": [{"path": "m.onnx", "hop": -1}]})
    assert "defaults.gate_db" in error(overrides={"defaults": {"gate_db": 3}})
    assert "log_level" in error(overrides={"log_level": "loud"})


def test_device_id_with_topic_characters_is_refused():
    for bad in ("a/b", "a+b", "a#", "a b", ""):
        assert "device_id" in error(overrides={"device_id": bad})


def test_gate_db_off_and_gate_syntax():
    s = load_settings(overrides={"defaults": {"gate_db": "off"}}, environ={})
    assert s.defaults.gate_db == "off"
    assert 'models[0].gate' in error(overrides={"models": [{"path": "m", "gate": "cough"}]})


def test_broken_toml_and_missing_file_are_config_errors(tmp_path):
    assert "not valid TOML" in error(config_file=write(tmp_path, "[audio\n"))
    assert "no such file" in error(config_file=tmp_path / "nope.toml")


def test_mqtt_table_is_validated_by_the_mqtt_settings_and_gets_the_device_id():
    s = load_settings(overrides={"device_id": "pi4", "mqtt": {"url": "mqtt://broker:1884", "qos": 0}}, environ={})
    m = mqtt_settings(s)
    assert m.device_id == "pi4" and m.qos == 0
    bad = load_settings(overrides={"mqtt": {"qos": 7}}, environ={})
    with pytest.raises(ConfigError, match="mqtt.qos"):
        mqtt_settings(bad)
    with pytest.raises(ConfigError, match="mqtt.colour: unknown key"):
        mqtt_settings(load_settings(overrides={"mqtt": {"colour": 1}}, environ={}))


def test_mqtt_password_is_never_echoed_in_errors():
    s = load_settings(overrides={"mqtt": {"password": "hunter2"}}, environ={})  # no username
    with pytest.raises(ConfigError) as exc:
        mqtt_settings(s)
    assert "hunter2" not in str(exc.value)
