"""The extension objects, created here and bound to the app in create_app. Nothing starts here."""
from typing import TYPE_CHECKING

from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})
# The models' base class. Flask-SQLAlchemy builds db.Model at run time, which a type checker cannot
# see; it is a subclass of Base, so checking against Base is true to what runs.
if TYPE_CHECKING:
    Model = Base
else:
    Model = db.Model
migrate = Migrate()
