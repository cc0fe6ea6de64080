"""Loaders of the bundled regression data: continuous and count targets."""

from __future__ import annotations

from ftl.data.party import Party
from ftl.datasets._loaders import _pair, _read

__all__ = ["load_dvisits", "load_motor", "load_student"]


def load_motor(n_hosts: int = 1) -> tuple[Party, ...]:
    """Electric-motor sensor readings (800 rows), FATE's vertical split.

    The guest (``"lab"``) holds the target ``motor_speed`` (continuous) and 4
    temperatures; the host (``"plant"``) holds 7 readings (ambient and coolant
    temperature, voltages, torque, currents). With ``n_hosts=2`` FATE's two-host
    split: ``"plant"`` (ambient, coolant, u_d) and ``"drive"`` (u_q, torque, i_d,
    i_q). Values as FATE ships them (normalised). Source: Kirchgässner, Wallscheid
    and Böcker, Paderborn University (Kaggle "Electric Motor Temperature").

    Parameters
    ----------
    n_hosts : {1, 2}, default=1
        One host with all 7 host features, or FATE's split over two hosts.

    Returns
    -------
    guest, host(s) : Party
    """
    if n_hosts == 1:
        return _pair("motor_hetero", "idx", "motor_speed", "lab", "plant")
    if n_hosts != 2:
        raise ValueError(f"n_hosts must be 1 or 2, got {n_hosts!r}")
    guest = Party(
        "lab", _read("motor_hetero_guest.csv"), id_column="idx", label_column="motor_speed"
    )
    return (
        guest,
        Party("plant", _read("motor_hetero_host_1.csv"), id_column="idx"),
        Party("drive", _read("motor_hetero_host_2.csv"), id_column="idx"),
    )


def load_student() -> tuple[Party, Party]:
    """Student performance (395 rows): the final grade ``y`` (integer 0..20).

    FATE's vertical split of the UCI "Student Performance" (mathematics) data:
    the guest (``"school"``) holds ``y`` and 6 features, the host (``"family"``)
    7; raw values (not scaled). A regression target: the grade is a number, not
    a class. Source: Cortez and Silva (2008), UCI Machine Learning Repository.

    Returns
    -------
    guest, host : Party
    """
    return _pair("student_hetero", "id", "y", "school", "family")


def load_dvisits() -> tuple[Party, Party]:
    """Doctor visits (5 190 rows): a count target for Poisson regression.

    FATE's vertical split of the Australian Health Survey 1977-78 data: the guest
    (``"clinic"``) holds ``doctorco`` (doctor consultations in the past two
    weeks, 0..9) and 3 health features; the host (``"insurer"``) holds 9 (sex,
    age, age squared, income, insurance and illness features); raw values.
    Source: Cameron and Trivedi (1986), *Journal of Applied Econometrics* 1(1).

    Returns
    -------
    guest, host : Party
    """
    return _pair("dvisits_hetero", "id", "doctorco", "clinic", "insurer")
