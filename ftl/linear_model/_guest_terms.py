"""The guest's side of a host's gradient: its masked cross terms, its update, the first pass.

Every batch, each host needs its cross terms on every other party's residual
pieces (docs/protocols.md, step 3 of a batch). It computes each one on the
owner's ciphertexts, masked; the owner decrypts it and the still-masked values go
back to the host in its ``lr.update``. :class:`HostTerms` runs the guest's part:
it decrypts the host's cross term on the guest's own pieces, relays the host's
cross terms on other hosts' pieces to their owners (several hosts) and sends the
host its update.

While the (single) host's weights are exactly zero, its start, it answers a batch
with ``lr.zero_margin`` (§3.6): its pieces are then the public values at margin 0,
so the guest knows the whole residual and sends it as one piece under its own key
(``lr.residual``). :func:`at_zero_margin` recognises that batch and
:meth:`HostTerms.zero_margin_pass` runs the host's side of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ftl.crypto.scheme import OwnKey, row, stack_rows
from ftl.federation.channel import Channel
from ftl.federation.messages import Message
from ftl.linear_model import _messages as msg
from ftl.linear_model import _pieces as pieces

__all__ = ["HostTerms", "at_zero_margin"]


def at_zero_margin(contributions: dict, hosts: list, track_loss: bool) -> bool:
    """Whether the host answered the batch with ``lr.zero_margin``.

    Parameters
    ----------
    contributions : dict of str to Message
        Every host's answer to the batch, by host name.
    hosts : list of Party or remote endpoints
        The hosts, in protocol order.
    track_loss : bool
        Whether the guest sums the training loss, which needs the host's ciphertexts.

    Returns
    -------
    bool
        ``True`` when the single host declared its margin zero.

    Raises
    ------
    ValueError
        If a host declared a zero margin where the short form is not allowed: with
        several hosts (the others need its margin) or while the loss is tracked.
    """
    zero = [n for n, reply in contributions.items() if reply.type == msg.ZERO_MARGIN.name]
    if not zero:
        return False
    if len(hosts) > 1 or track_loss or zero != [hosts[0].name]:
        raise ValueError(f"{zero[0]!r} declared a zero margin where none is allowed")
    return True


@dataclass(frozen=True)
class HostTerms:
    """The guest's exchanges with a host that give the host its gradient.

    Parameters
    ----------
    channel : Channel
        Where every cross-party message goes through.
    own : OwnKey
        The guest's own key, under which its pieces travel.
    name : str
        The guest's party name (the owner of its pieces).
    widths : dict of str to int
        Every party's feature count: a host's cross term holds one value per feature.
    n_train : int
        Training rows of the fit, which fix the pieces' public slot layout
        (``_pieces.py``).
    lbfgs : bool
        Whether the hosts answer their update with their slope (``lr.slope``).
    """

    channel: Channel
    own: OwnKey
    name: str
    widths: dict
    n_train: int
    lbfgs: bool

    def gradient(
        self,
        host,
        own_pieces: Message,
        contributions: dict,
        hosts: list,
        n_rows: int,
        n_pieces: int,
    ) -> float:
        """Give ``host`` its masked cross terms on every other party's pieces.

        Parameters
        ----------
        host : Party or remote endpoint
            The host whose gradient this is.
        own_pieces : Message
            The guest's ``lr.contribution``: its ``n_pieces`` pieces of the batch.
        contributions : dict of str to Message
            Every host's ``lr.contribution`` of the batch, by host name.
        hosts : list of Party or remote endpoints
            All the hosts; the cross terms on the others' pieces are relayed to them.
        n_rows : int
            Rows of the batch.
        n_pieces : int
            The guest's pieces per row.

        Returns
        -------
        float
            The host's slope ``g_H . d_H`` (L-BFGS; 0 otherwise).
        """
        by_name = {h.name: h for h in hosts}
        owners, values = [], []
        for owner in [self.name, *(o.name for o in hosts if o is not host)]:
            if owner == self.name:
                decrypted = self.cross(host, own_pieces, n_rows, n_pieces)
            else:
                # the driver only relays: the owner decrypts, the host unmasks
                term = self.channel.call(
                    host.endpoint, "lr.host.cross", contributions[owner], origin=owner
                )
                decrypted = self.channel.call(
                    by_name[owner].endpoint, "lr.host.decrypt", term, origin=host.name
                )["values"]
            for i in range(decrypted.shape[0]):
                owners.append(owner)
                values.append(row(decrypted, i))
        return self.update(host, owners, values)

    def cross(self, host, request: Message, n_rows: int, n_pieces: int) -> np.ndarray:
        """The host's masked cross term on our ``n_pieces`` pieces, decrypted by us.

        We decrypt only what the protocol calls for: one total cross term exactly as
        wide as the host's block, packed with the public slot width (never a
        per-sample vector of ours).

        Parameters
        ----------
        host : Party or remote endpoint
            The host that computes the cross term.
        request : Message
            Our pieces of the batch (``lr.contribution`` or ``lr.residual``).
        n_rows : int
            Rows of the batch.
        n_pieces : int
            Our pieces per row in ``request``.

        Returns
        -------
        ndarray
            One row: the host's cross term, still under its mask.

        Raises
        ------
        ValueError
            If the host's cross term has another width or slot layout.
        """
        term = self.channel.call(host.endpoint, "lr.host.cross", request)
        if term["count"] != self.widths[host.name]:
            raise ValueError(f"{host.name!r} returned a malformed cross term")
        try:
            plain = pieces.decrypt_term(self.own, term, n_rows, n_pieces, self.n_train)
        except ValueError as exc:
            raise ValueError(f"{host.name!r} returned a malformed cross term") from exc
        return stack_rows([plain])

    def update(self, host, owners: list, values: list) -> float:
        """Send ``host`` its masked cross terms (``owners[i]`` decrypted ``values[i]``).

        Returns
        -------
        float
            The host's slope (L-BFGS; 0 otherwise).
        """
        reply = self.channel.call(
            host.endpoint,
            "lr.host.update",
            Message(msg.UPDATE.name, {"owners": owners, "values": stack_rows(values)}),
        )
        return _scalar(reply, msg.SLOPE.name, "slope", host.name) if self.lbfgs else 0.0

    def zero_margin_pass(self, host, approx, u_guest, y, x, weights) -> tuple[np.ndarray, float]:
        """The batch at the host's zero weights (docs/protocols.md §3.6).

        The host's pieces are the public values at margin 0, so our gradient needs
        nothing from it; the host's needs the residual as one piece under our key,
        and we decrypt its masked cross term as in any batch.

        Parameters
        ----------
        host : Party or remote endpoint
            The single host, which answered the batch with ``lr.zero_margin``.
        approx : object
            The residual's factorisation (:func:`~ftl.linear_model._links.make_link`).
        u_guest, y, x : ndarray
            Our margins, targets and features of the batch.
        weights : ndarray
            Our per-row weights of the host's pieces (``approx.guest_weights``).

        Returns
        -------
        cross : ndarray
            Our gradient's cross term on the host's pieces.
        slope : float
            The host's slope (L-BFGS; 0 otherwise).
        """
        zero = np.zeros(len(y))
        # our gradient's cross term on the host's (public) pieces
        cross = x.T @ np.sum(weights * approx.host_values(zero), axis=1)
        residual = np.sum(approx.guest_values(u_guest, y) * approx.host_weights(zero), axis=1)
        request = Message(
            msg.RESIDUAL.name,
            {
                "owner": self.name,
                "values": pieces.encrypt_pieces(self.own, residual[:, None], self.n_train),
            },
        )
        decrypted = self.cross(host, request, len(y), 1)
        return cross, self.update(host, [self.name], [row(decrypted, 0)])


def _scalar(reply: Message, kind: str, field_name: str, sender: str) -> float:
    """The single finite number a reply of type ``kind`` must carry."""
    if reply.type != kind or reply[field_name].shape != (1,):
        raise ValueError(f"{sender!r} answered with a malformed {kind} message")
    value = float(reply[field_name][0])
    if not np.isfinite(value):
        raise ValueError(f"{sender!r} sent a non-finite {field_name}")
    return value
